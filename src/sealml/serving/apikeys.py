"""API keys: their format, their salted hashes, and checking a presented key.

A key reads ``sml_<id>_<secret>``: the id is public (it names the key in lists, logs and
the ledger); the secret is 32 random bytes shown once. Only ``HMAC-SHA256(salt, secret)``
is stored. A fast hash is enough here because the secret has 256 bits of entropy: nothing
is gained by a slow password hash, and every request pays for the check.
"""

from __future__ import annotations

import base64
import hmac
import math
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..clock import parsed

PREFIX = "sml"
SCOPES = ("predict", "explain", "admin")
_KEY = re.compile(r"sml_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class ApiKey:
    """What a key may do (never its secret)."""

    id: str
    name: str
    owner: str
    scopes: tuple[str, ...]
    models: tuple[str, ...]  # ("*",) for every model
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None
    verified: bool = True  # False: its record does not carry a valid workspace signature

    @property
    def principal(self) -> str:
        """How requests made with this key are attributed."""
        return f"apikey:{self.id}"

    def allows_model(self, name: str) -> bool:
        return "*" in self.models or name in self.models


@dataclass(frozen=True)
class StoredKey:
    """A key's record as the database holds it."""

    key: ApiKey
    salt: bytes
    digest: bytes = field(repr=False)


class KeyRejectedError(Exception):
    """A presented key is not valid; *reason* is for logs, never for the caller."""

    def __init__(self, reason: str, key_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}")
    return chosen


def digest_of(salt: bytes, secret: str) -> bytes:
    return hmac.digest(salt, secret.encode("ascii"), "sha256")


def new_key() -> tuple[str, str, bytes, bytes]:
    """A fresh key: (id, the full key text to show once, salt, digest)."""
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    salt = secrets.token_bytes(16)
    return key_id, f"{PREFIX}_{key_id}_{secret}", salt, digest_of(salt, secret)


def parse(presented: str) -> tuple[str, str]:
    """(id, secret) of a presented key, or KeyRejectedError when it is not shaped like one."""
    match = _KEY.fullmatch(presented)
    if match is None:
        raise KeyRejectedError("malformed")
    return match.group(1), match.group(2)


def _epoch(moment: str | None) -> float:
    if moment is None:
        return math.inf
    return parsed(moment).timestamp()


class KeyRing:
    """The keys a server accepts, looked up by id and checked in constant time."""

    def __init__(self, stored: Iterable[StoredKey] = ()) -> None:
        self._by_id = {entry.key.id: (entry, _epoch(entry.key.expires_at)) for entry in stored}

    def __len__(self) -> int:
        return len(self._by_id)

    def authenticate(self, presented: str, now: float | None = None) -> ApiKey:
        """The key's record when *presented* is a current key at *now* (epoch seconds,
        default the present); KeyRejectedError otherwise."""
        key_id, secret = parse(presented)
        found = self._by_id.get(key_id)
        if found is None:
            raise KeyRejectedError("unknown", key_id)
        entry, expires = found
        if not hmac.compare_digest(digest_of(entry.salt, secret), entry.digest):
            raise KeyRejectedError("wrong secret", key_id)
        if entry.key.revoked_at is not None:
            raise KeyRejectedError("revoked", key_id)
        if (time.time() if now is None else now) >= expires:
            raise KeyRejectedError("expired", key_id)
        return entry.key
