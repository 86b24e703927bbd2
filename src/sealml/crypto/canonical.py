"""Canonical JSON: the exact bytes that are hashed and signed.

Keys sorted, no insignificant whitespace, UTF-8, no NaN. Two producers that agree on
the values agree on the bytes, which is what signatures and the ledger rely on.
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """Serialise *value* to canonical JSON bytes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
