"""What a skops file would import, judged by the same allowlist as pickles.

A skops file is not code, but its schema names the types and functions skops rebuilds;
skops imports only those it is told to trust. Its own audit lists every name outside its
built-in trusted set, reading the schema without loading anything; each is then judged
like a global in a pickle.
"""

from __future__ import annotations

import io
import zipfile

from ..crypto.canonical import parse_json
from ..errors import UsageError
from .allowlist import judge


def is_skops_schema(content: bytes) -> bool:
    """Whether a zip's ``schema.json`` is skops's (which names the types to rebuild)."""
    try:
        schema = parse_json(content)
    except ValueError:
        return False
    return isinstance(schema, dict) and ("_skops_version" in schema or "__loader__" in schema)


def is_skops_file(data: bytes) -> bool:
    """Whether *data* is shaped like a skops file: a zip whose ``schema.json`` is skops's.
    (What it names is the scanner's to judge.)"""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return is_skops_schema(archive.read("schema.json"))
    except Exception:  # not a zip, no schema, a damaged archive: zipfile raises many kinds
        return False


def untrusted_types(data: bytes) -> list[str]:
    """Every dotted name *data* would need trusted to load (skops's audit, nothing loaded);
    a damaged file is a UsageError."""
    import skops.io

    try:
        return sorted(skops.io.get_untrusted_types(data=data))
    except Exception as error:  # zipfile and skops raise many kinds on damaged input
        raise UsageError(f"not a skops model file: {str(error)[:100]}") from None


def severity(dotted: str) -> str | None:
    """None when the allowlist accepts *dotted*; otherwise how bad importing it would be."""
    module, _, name = dotted.rpartition(".")
    return judge(module, name) if module else "high"
