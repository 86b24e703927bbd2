"""Short-lived login sessions.

``login`` checks the password once, then issues a random token. The client keeps the token
and the principal's signing key sealed under ``HKDF(token || key_share)``; the database keeps
only the token's hash and ``key_share``. Neither half alone unlocks the key, and deleting
the database row (logout, expiry) makes the client's file useless.
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
from ..errors import AuthenticationError
from .principals import Actor, PrincipalStore

TOKEN_SIZE = 32


@dataclass(frozen=True)
class SessionTicket:
    """What the client stores: the token and its sealed signing key."""

    principal: str
    token: bytes
    key_box: bytes
    expires_at: int

    def __repr__(self) -> str:
        return f"SessionTicket({self.principal}, expires_at={self.expires_at}, ***)"


def _session_key(token: bytes, key_share: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=b"sealml/session/v1").derive(
        token + key_share
    )


def _token_hash(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def issue(session: Session, actor: Actor, ttl_seconds: int) -> SessionTicket:
    """Start a session for an authenticated actor."""
    now = int(time.time())
    token, key_share = os.urandom(TOKEN_SIZE), os.urandom(32)
    session.add(
        SessionRow(
            token_hash=_token_hash(token),
            principal_id=actor.principal.id,
            key_share=key_share,
            created_at=now,
            expires_at=now + ttl_seconds,
        )
    )
    box = seal_box(
        _session_key(token, key_share),
        actor.signing_key.pkcs8_der(),
        actor.principal.id.encode(),
    )
    return SessionTicket(actor.principal.name, token, box, now + ttl_seconds)


def resume(session: Session, principals: PrincipalStore, ticket: SessionTicket) -> Actor:
    """Turn a stored ticket back into an actor, refusing expired or revoked sessions."""
    row = session.get(SessionRow, _token_hash(ticket.token))
    if row is None:
        raise AuthenticationError("session expired or revoked; run `sealml login`")
    if row.expires_at <= int(time.time()):
        session.delete(row)
        raise AuthenticationError("session expired; run `sealml login`")
    principal = principals.get_by_id(session, row.principal_id)
    if principal.name != ticket.principal:
        raise AuthenticationError("session does not belong to this user; run `sealml login`")
    try:
        der = open_box(
            _session_key(ticket.token, row.key_share), ticket.key_box, principal.id.encode()
        )
    except BoxOpenError:
        raise AuthenticationError("session file is damaged; run `sealml login`") from None
    return principals.authenticate_key(
        session, principal.name, SigningKey.from_pkcs8(der), via="session"
    )


def revoke(session: Session, token: bytes) -> bool:
    """End a session; True if it existed."""
    result = session.execute(delete(SessionRow).where(SessionRow.token_hash == _token_hash(token)))
    return bool(getattr(result, "rowcount", 0))


def purge_expired(session: Session) -> None:
    session.execute(delete(SessionRow).where(SessionRow.expires_at <= int(time.time())))
