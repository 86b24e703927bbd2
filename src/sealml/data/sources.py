"""Fetching source data: local files, HTTPS URLs and SQL databases, allowlisted and pinned.

HTTPS only, with certificate verification always on (a private CA can be added, never
verification removed) and no redirects. Remote sources must match an allowlist pattern
from ``[data] allowed_sources``; a source pinned by SHA-256 is refused the moment its
content changes. The SHA-256 of exactly what was fetched is returned, to be recorded.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..clock import utc_now
from ..errors import IntegrityError, UsageError
from .tables import Limits, read_source

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class SourcePolicy:
    """Where data may come from and how much of it."""

    allowed: tuple[str, ...] = ()
    ca_bundle: Path | None = None
    timeout_seconds: float = 60.0
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class Fetched:
    """Bytes fetched from a source, with what provenance records about them."""

    data: bytes
    location: str
    fetched_at: str

    @cached_property
    def sha256(self) -> str:
        """The SHA-256 of the bytes (computed when first asked: whoever records it)."""
        return hashlib.sha256(self.data).hexdigest()


def redact(location: str) -> str:
    """A location with any password removed (for records and messages)."""
    parts = urlsplit(location)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return location


def _check_allowed(location: str, allowed: Sequence[str]) -> None:
    shown = redact(location)
    if not any(fnmatch.fnmatchcase(shown, pattern) for pattern in allowed):
        raise UsageError(
            f"source {shown} is not in [data] allowed_sources; add a pattern to allow it"
        )


def _pin(fetched: Fetched, sha256: str | None) -> Fetched:
    if sha256 is not None and fetched.sha256 != sha256.lower():
        raise IntegrityError(
            f"source {fetched.location} changed: pinned sha256 {sha256[:16]}…, "
            f"fetched {fetched.sha256[:16]}…"
        )
    return fetched


def _fetched(data: bytes, location: str) -> Fetched:
    return Fetched(data, redact(location), utc_now())


def _https(location: str, policy: SourcePolicy) -> bytes:
    import httpx

    context = ssl.create_default_context(cafile=str(policy.ca_bundle) if policy.ca_bundle else None)
    body = bytearray()
    try:
        with (
            httpx.Client(
                verify=context, follow_redirects=False, timeout=policy.timeout_seconds
            ) as client,
            client.stream("GET", location) as response,
        ):
            if response.status_code != 200:
                raise UsageError(f"source {location} answered HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > policy.limits.max_bytes:
                    raise UsageError(
                        f"source {location} is larger than {policy.limits.max_bytes} bytes"
                    )
    except httpx.ConnectError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate" in reason.lower():
            raise UsageError(
                f"source {location}: TLS certificate verification failed ({reason})"
            ) from None
        raise UsageError(f"source {location}: cannot connect ({reason})") from None
    except httpx.HTTPError as error:
        raise UsageError(
            f"source {location}: {type(error).__name__}: {error}".splitlines()[0]
        ) from None
    return bytes(body)


def _sql(location: str, query: str | None, policy: SourcePolicy) -> bytes:
    import pandas as pd
    from sqlalchemy import create_engine, literal_column, select, table, text
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    if not query:
        raise UsageError(f"source {redact(location)} needs a query or a table name")
    name = query.strip()
    if _TABLE.fullmatch(name):
        statement: Any = select(literal_column("*")).select_from(table(name))
    else:
        statement = text(query)  # a query the configuration author wrote
    try:
        engine = create_engine(location)
    except (ArgumentError, ImportError) as error:
        raise UsageError(f"source {redact(location)}: {error}".splitlines()[0]) from None
    try:
        with engine.connect() as connection:
            frame = pd.read_sql(statement, connection)
    except (SQLAlchemyError, pd.errors.DatabaseError) as error:
        cause = getattr(error, "orig", None) or error.__cause__ or error
        message = str(getattr(cause, "orig", None) or cause).splitlines()[0]
        raise UsageError(f"source {redact(location)}: query failed: {message}") from None
    finally:
        engine.dispose()
    sink = io.StringIO()
    frame.to_csv(sink, index=False, lineterminator="\n")
    data = sink.getvalue().encode("utf-8")
    if len(data) > policy.limits.max_bytes:
        raise UsageError(
            f"source {redact(location)} returned more than {policy.limits.max_bytes} bytes"
        )
    return data


def fetch(
    location: str | Path,
    policy: SourcePolicy,
    *,
    sha256: str | None = None,
    query: str | None = None,
) -> Fetched:
    """Fetch a source (path, ``https://`` URL or SQLAlchemy URL) and check its pin.

    A SQL source is returned as CSV (UTF-8, header, ``\\n`` line ends) of the query result,
    so it can be pinned and parsed like a file.
    """
    text = str(location)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("", "file"):
        path = Path(urlsplit(text).path) if scheme == "file" else Path(text)
        return _pin(_fetched(read_source(path, policy.limits), str(path)), sha256)
    if scheme == "http":
        raise UsageError(f"source {redact(text)}: plain HTTP is refused; use HTTPS")
    _check_allowed(text, policy.allowed)
    if scheme == "https":
        return _pin(_fetched(_https(text, policy), text), sha256)
    return _pin(_fetched(_sql(text, query, policy), text), sha256)
