"""Reading a YAML document a user hands over (schemas, PII action plans)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UsageError


def read_yaml(path: Path, what: str) -> Any:
    """The document in *path*; every way it can be unreadable is a one-line UsageError
    naming *what* it should have been."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise UsageError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not UTF-8 text") from None
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{what} {path}{line}: not valid YAML") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise UsageError(f"{what} {path}: nested too deeply") from None
