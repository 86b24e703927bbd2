"""Short-lived login sessions.

``login`` checks the password once, then issues a random token. The client keeps the token
and the principal's signing key sealed under ``HKDF(token || key_share)``; the database keeps
only the token's hash and ``key_share``. Neither half alone unlocks the key, and deleting
the database row (logout, expiry) makes the client's file useless. The sealing is bound to
the session's expiry and to the principal's password as it was at login, so a row whose
expiry was pushed back in the database, or copied back after a password change ended it,
opens nothing.

When the keystore was unlocked at login, its passphrase-derived key is sealed the same way
(``keystore_box``), so commands of the session skip the memory-hard KDF, as ``sudo`` or
``gpg-agent`` cache a credential for a while. It lives and dies with the session.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete
from sqlalchemy.orm import Session

from ..crypto.box import BoxOpenError, open_box, seal_box
from ..crypto.signing import SigningKey
from ..db.models import SessionRow
from ..db.raw import select_one
from ..errors import AuthenticationError, UsageError
from .principals import Actor, PrincipalStore

TOKEN_SIZE = 32


@dataclass(frozen=True)
class SessionTicket:
    """What the client stores: the token and its sealed signing key."""

    principal: str
    token: bytes
    key_box: bytes
    expires_at: int
    keystore_box: bytes | None = None

    def __repr__(self) -> str:
        return f"SessionTicket({self.principal}, expires_at={self.expires_at}, ***)"


def _session_key(token: bytes, key_share: bytes, expires_at: int, password_stamp: str) -> bytes:
    info = f"sealml/session/v2:{expires_at}:{password_stamp}".encode()
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(token + key_share)


def _token_hash(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _keystore_context(principal_id: str) -> bytes:
    return b"sealml/session/keystore/v1:" + principal_id.encode()


@dataclass(frozen=True)
class Resumed:
    """A resumed session: the actor, and the keystore key when the session holds one."""

    actor: Actor
    keystore_key: bytes | None

    def __repr__(self) -> str:
        return f"Resumed({self.actor.name}, keystore={'yes' if self.keystore_key else 'no'})"


def issue(
    session: Session, actor: Actor, ttl_seconds: int, keystore_key: bytes | None = None
) -> SessionTicket:
    """Start a session for an authenticated actor; *keystore_key*, when given, is sealed
    into the ticket beside the signing key."""
    now = int(time.time())
    expires_at = now + ttl_seconds
    token, key_share = os.urandom(TOKEN_SIZE), os.urandom(32)
    session.add(
        SessionRow(
            token_hash=_token_hash(token),
            principal_id=actor.principal.id,
            key_share=key_share,
            created_at=now,
            expires_at=expires_at,
        )
    )
    if not isinstance(actor.signing_key, SigningKey):
        raise UsageError(
            "a key kept in a PKCS#11 token cannot be carried by a session: log in with it "
            "for each command"
        )
    sealing_key = _session_key(token, key_share, expires_at, actor.principal.password_stamp)
    box = seal_box(sealing_key, actor.signing_key.pkcs8_der(), actor.principal.id.encode())
    keystore_box = (
        seal_box(sealing_key, keystore_key, _keystore_context(actor.principal.id))
        if keystore_key is not None
        else None
    )
    return SessionTicket(actor.principal.name, token, box, expires_at, keystore_box)


def resume(session: Session, principals: PrincipalStore, ticket: SessionTicket) -> Resumed:
    """Turn a stored ticket back into an actor (and the keystore key it may hold),
    refusing expired or revoked sessions."""
    row = select_one(session, SessionRow, "token_hash = ?", (_token_hash(ticket.token),))
    if row is None:
        raise AuthenticationError("session expired or revoked; run `sealml login`")
    if row.expires_at <= int(time.time()):
        raise AuthenticationError("session expired; run `sealml login`")
    principal = principals.get_by_id(session, row.principal_id)
    if principal.name != ticket.principal:
        raise AuthenticationError("session does not belong to this user; run `sealml login`")
    sealing_key = _session_key(
        ticket.token, row.key_share, row.expires_at, principal.password_stamp
    )
    try:
        der = open_box(sealing_key, ticket.key_box, principal.id.encode())
        keystore_key = (
            open_box(sealing_key, ticket.keystore_box, _keystore_context(principal.id))
            if ticket.keystore_box is not None
            else None
        )
    except BoxOpenError:
        raise AuthenticationError(
            "the session does not open (its file is damaged, or its record was changed); "
            "run `sealml login`"
        ) from None
    actor = principals.act_with_key(principal, SigningKey.from_pkcs8(der), via="session")
    return Resumed(actor, keystore_key)


def revoke(session: Session, token: bytes) -> bool:
    """End a session; True if it existed."""
    result = session.execute(delete(SessionRow).where(SessionRow.token_hash == _token_hash(token)))
    return bool(getattr(result, "rowcount", 0))


def purge_expired(session: Session) -> None:
    session.execute(delete(SessionRow).where(SessionRow.expires_at <= int(time.time())))
