"""``sealml apikey create|ls|revoke``: the serving API keys a workspace issues."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..clock import parsed, utc_after, utc_now
from ..crypto.canonical import canonical_json
from ..crypto.signing import Signer, VerifyingKey
from ..db.models import ApiKeyRow
from ..errors import NotFoundError, UsageError
from ..ledger import EventFilter, Ledger
from ..serving import apikeys
from ..serving.apikeys import ApiKey, StoredKey
from .core import WorkspaceCore


def _signed_bytes(row: ApiKeyRow) -> bytes:
    """What the workspace key signs for a key: every column a server relies on."""
    return canonical_json(
        {
            "v": 1,
            "id": row.id,
            "name": row.name,
            "owner": row.owner,
            "salt": row.salt.hex(),
            "digest": row.digest.hex(),
            "scopes": json.loads(row.scopes),
            "models": json.loads(row.models),
            "created_at": row.created_at,
            "expires_at": row.expires_at,
            "revoked_at": row.revoked_at,
        }
    )


def _record(row: ApiKeyRow, verifier: VerifyingKey) -> ApiKey:
    try:
        verified = row.attestation is not None and verifier.verify(
            row.attestation, _signed_bytes(row)
        )
    except (ValueError, TypeError):  # malformed JSON columns
        verified = False
    return ApiKey(
        id=row.id,
        name=row.name,
        owner=row.owner,
        scopes=tuple(json.loads(row.scopes)) if verified else (),
        models=tuple(json.loads(row.models)) if verified else (),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        verified=verified,
    )


def attest_again(session: Session, verifier: VerifyingKey, signer: Signer) -> int:
    """Sign again with *signer* every stored API key whose attestation *verifier* accepts
    (a workspace key rotation); keys that do not verify stay unverified. Returns how many
    were signed."""
    signed = 0
    for row in session.execute(select(ApiKeyRow)).scalars():
        if _record(row, verifier).verified:
            row.attestation = signer.sign(_signed_bytes(row))
            signed += 1
    return signed


class ApiKeyOperations(WorkspaceCore):
    """Issuing, listing and revoking API keys (``apikey:manage``)."""

    def create_api_key(
        self,
        name: str,
        *,
        scopes: Sequence[str] = ("predict",),
        models: Sequence[str] = ("*",),
        expires_at: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its full text, which is shown this once and never stored."""
        if not name.strip() or len(name) > 64:
            raise UsageError("a key name is 1-64 characters")
        try:
            chosen = apikeys.check_scopes(scopes)
        except ValueError as error:
            raise UsageError(str(error)) from None
        targets = tuple(dict.fromkeys(m.strip() for m in models if m.strip())) or ("*",)
        now = utc_now()
        if expires_at is not None and expires_at <= now:
            raise UsageError("the expiry is in the past")
        actor = self.authorize("apikey:manage", "apikey:*", action="apikey.create")
        key_id, text, salt, digest = apikeys.new_key()
        with self.transaction() as session:
            (seq,) = self.append(
                session,
                [
                    self.event(
                        "apikey.create",
                        f"apikey:{key_id}",
                        name=name,
                        scopes=list(chosen),
                        models=list(targets),
                        expires_at=expires_at,
                    )
                ],
            )
            row = ApiKeyRow(
                id=key_id,
                name=name,
                owner=actor.name,
                salt=salt,
                digest=digest,
                scopes=json.dumps(list(chosen)),
                models=json.dumps(list(targets)),
                created_at=now,
                expires_at=expires_at,
                revoked_at=None,
                ledger_seq=seq,
            )
            self._attest_key(row)
            session.add(row)
        return _record(row, self.verifier.key), text

    def _attest_key(self, row: ApiKeyRow) -> None:
        row.attestation = self._workspace_signing_key().sign(_signed_bytes(row))

    def rotate_api_key(
        self, key_id: str, grace_seconds: int, expires_at: str | None = None
    ) -> tuple[ApiKey, str, ApiKey]:
        """Replace a key without downtime: a new key with the same name, scopes and models
        (shown this once), and the old one expiring after *grace_seconds* (or at its own
        expiry, if sooner). Returns the new key, its text and the old key."""
        if not 0 <= grace_seconds <= 30 * 24 * 3600:
            raise UsageError("the grace period is between 0 seconds and 30 days")
        self.authorize("apikey:manage", f"apikey:{key_id}", action="apikey.rotate")
        with self.db.read() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFoundError(f"no API key {key_id!r}")
            old = _record(row, self.verifier.key)
        if not old.verified:
            raise UsageError(f"API key {key_id} is unverified; revoke it and issue a new one")
        if old.revoked_at is not None or (old.expires_at and old.expires_at <= utc_now()):
            raise UsageError(f"API key {key_id} is no longer valid; issue a new one")
        if expires_at is None and old.expires_at:  # the same lifetime as the old key had
            lifetime = parsed(old.expires_at) - parsed(old.created_at)
            expires_at = utc_after(lifetime.total_seconds())
        new, text = self.create_api_key(
            old.name, scopes=old.scopes, models=old.models, expires_at=expires_at
        )
        until = utc_after(grace_seconds)
        with self.transaction() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:  # deleted meanwhile
                raise NotFoundError(f"no API key {key_id!r}")
            row.expires_at = min(row.expires_at or until, until)
            self._attest_key(row)
            event = self.event(
                "apikey.rotate", f"apikey:{key_id}", replaced_by=new.id, expires_at=row.expires_at
            )
            self.append(session, [event])
            return new, text, _record(row, self.verifier.key)

    def api_keys(self) -> list[ApiKey]:
        """Every key ever issued (revoked ones included), oldest first."""
        self.authorize("apikey:manage", "apikey:*", action="apikey.ls")
        with self.db.read() as session:
            rows = session.execute(select(ApiKeyRow).order_by(ApiKeyRow.created_at)).scalars()
            return [_record(row, self.verifier.key) for row in rows]

    def revoke_api_key(self, key_id: str, reason: str) -> ApiKey:
        """Revoke a key; running servers refuse it at their next refresh (seconds)."""
        if not reason.strip():
            raise UsageError("a reason is required")
        self.authorize("apikey:manage", f"apikey:{key_id}", action="apikey.revoke")
        with self.transaction() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFoundError(f"no API key {key_id!r}")
            if row.revoked_at is not None:
                raise UsageError(f"API key {key_id} is already revoked")
            self.append(session, [self.event("apikey.revoke", f"apikey:{key_id}", reason=reason)])
            row.revoked_at = utc_now()
            self._attest_key(row)
            return _record(row, self.verifier.key)

    def _ledger_revocations(self, session: Session) -> dict[str, str]:
        """Key id -> revocation time, as the ledger records them. A row restored from
        before its revocation still carries a valid signature; the ledger's event does not
        go away with it. Revocations are final, so each call reads only the events added
        since the last (servers ask every few seconds)."""
        start = Ledger.size(session)
        where = EventFilter(action="apikey.revoke", outcome="ok", from_seq=self._revocations[0])
        found = dict(self._revocations[1])
        for event in Ledger.events(session, where):
            fields = event.fields()
            found[str(fields["resource"]).removeprefix("apikey:")] = str(fields["ts"])
        self._revocations = (start, found)
        return found

    def stored_api_keys(self) -> list[StoredKey]:
        """Every key whose record the workspace key signed, with its salt and hash, for a
        server's key ring (``model:serve``). A row edited in the database, or written
        before keys were signed, is left out: such a key is refused."""
        self.authorize("model:serve", "apikey:*", action="apikey.load")
        with self.db.read() as session:
            rows = session.execute(select(ApiKeyRow)).scalars()
            found = [(_record(row, self.verifier.key), row) for row in rows]
            revoked = self._ledger_revocations(session)
        return [
            StoredKey(
                replace(key, revoked_at=key.revoked_at or revoked.get(key.id)), row.salt, row.digest
            )
            for key, row in found
            if key.verified
        ]
