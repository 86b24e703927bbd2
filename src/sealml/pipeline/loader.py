"""Loading a pipeline file: ``sealml run PIPELINE.py`` executes it and takes its Pipeline."""

from __future__ import annotations

import hashlib
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .dag import Pipeline


@dataclass(frozen=True)
class LoadedPipeline:
    pipeline: Pipeline
    path: Path
    code_sha256: str


def load_pipeline(path: Path) -> LoadedPipeline:
    """Run the pipeline file and return its ``pipeline`` (or only Pipeline object).

    Syntax errors and exceptions while loading become one-line UsageErrors naming the file.
    """
    path = path.resolve()
    try:
        source = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no pipeline file {path}") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as error:
        line = f":{error.lineno}" if error.lineno is not None else ""
        raise UsageError(f"{path.name}{line}: syntax error: {error.msg}") from None
    except ValueError as error:
        raise UsageError(f"{path.name}: {error}") from None
    digest = hashlib.sha256(source).hexdigest()
    module = types.ModuleType(f"sealml_pipeline_{digest[:16]}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - running the user's pipeline is the point
    except Exception as error:
        sys.modules.pop(module.__name__, None)
        raise UsageError(
            f"{path.name}: loading failed: {type(error).__name__}: {error}".splitlines()[0]
        ) from None
    except SystemExit as exit_:  # a script's sys.exit() at import: not ours to obey
        sys.modules.pop(module.__name__, None)
        raise UsageError(
            f"{path.name}: loading failed: the file calls sys.exit({exit_.code!r}) "
            '(put script code under `if __name__ == "__main__":`)'
        ) from None
    candidate = module.__dict__.get("pipeline")
    if not isinstance(candidate, Pipeline):
        found = [v for v in module.__dict__.values() if isinstance(v, Pipeline)]
        if len(found) != 1:
            raise UsageError(f"{path.name} defines no `pipeline = Pipeline(...)`")
        candidate = found[0]
    return LoadedPipeline(candidate, path, digest)
