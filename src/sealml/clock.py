"""The one way sealml writes times: RFC 3339, UTC, microseconds, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> str:
    """The current time, e.g. ``2026-11-22T10:15:02.123456Z`` (sorts as text)."""
    return datetime.now(UTC).strftime(_FORMAT)


def normalised(text: str) -> str:
    """An ISO 8601 date or time written as sealml writes times (UTC when it names no
    zone); ValueError when it is not one."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(_FORMAT)


def parsed(stamp: str) -> datetime:
    """A time sealml wrote, as an aware datetime (ValueError when malformed)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def utc_after(seconds: float) -> str:
    """The time *seconds* from now, written as :func:`utc_now` writes it."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime(_FORMAT)
