"""The one way sealml writes times: RFC 3339, UTC, microseconds, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    """The current time, e.g. ``2026-11-22T10:15:02.123456Z`` (sorts as text)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
