"""Canonical JSON: the exact bytes that are hashed and signed.

Keys sorted, no insignificant whitespace, UTF-8 without escaping non-ASCII characters.
Signed records hold strings, integers, booleans, null, lists and objects only (no floats,
whose text form differs between serialisers). Verifiers never re-serialise: they hash and
check the stored bytes, then parse them.
"""

from __future__ import annotations

from typing import Any

import orjson


def canonical_json(value: Any) -> bytes:
    """Serialise *value* to canonical JSON bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def parse_json(data: bytes | str) -> Any:
    """Parse JSON (fast path used by verifiers); raises ValueError on malformed input."""
    return orjson.loads(data)
