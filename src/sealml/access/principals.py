"""Principals (users and services), their signing keys and how they authenticate.

Each principal row carries a canonical record (name, kind, roles, public key, status) and
the workspace key's signature over it, so a database edit that grants a role or swaps a
key is detected when the principal is loaded, and the ledger's checkpoints anchor each
row's newest state (:mod:`sealml.access.anchor`), so a row restored from an older copy of
the database is refused too. A human's private key is sealed under a key
derived from their password with Argon2id; a service holds its private key in a file.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..crypto.box import BoxOpenError, open_box, seal_box
from ..crypto.canonical import canonical_json
from ..crypto.kdf import Argon2idParams, derive_key, new_salt
from ..crypto.secret import Secret
from ..crypto.signing import KeyFormatError, Signer, SigningKey, VerifyingKey
from ..db.models import PrincipalRow
from ..db.raw import select_rows
from ..errors import AuthenticationError, IntegrityError, NotFoundError, UsageError
from .anchor import Anchor, mark_changed

Kind = Literal["human", "service"]
MIN_PASSWORD_LENGTH = 8
_ANCHOR_READS = 3  # see PrincipalStore._read_anchored
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.@")


def check_name(name: str) -> None:
    """Principal names: 1-64 lower-case letters, digits and ``-_.@``."""
    if not 0 < len(name) <= 64 or not set(name) <= _NAME_CHARS:
        raise UsageError("a principal name is 1-64 characters of a-z, 0-9, '-', '_', '.', '@'")


@dataclass(frozen=True)
class Principal:
    """A verified principal record."""

    id: str
    name: str
    kind: Kind
    roles: tuple[str, ...]
    public_key: VerifyingKey
    disabled: bool
    created_at: str
    created_by: str
    password_stamp: str = ""
    """Changes whenever the password does: sessions that began under another one end."""
    retired_keys: tuple[VerifyingKey, ...] = ()
    """Keys it signed with before rotations: they still verify what it signed then."""
    key_since: str = ""
    """When its current key began: its creation, or its latest key rotation."""
    compromised: tuple[tuple[VerifyingKey, str], ...] = ()
    """Retired keys reported compromised, each with the time from which what it signed is
    no longer trusted."""
    password_reset_by: str | None = None
    """The admin who reset the password, until the principal changes it: until then it
    may do nothing but change it."""

    @property
    def keys(self) -> tuple[VerifyingKey, ...]:
        """Every key that verifies its signatures: the current one first."""
        return (self.public_key, *self.retired_keys)

    def keyring(self) -> dict[str, VerifyingKey]:
        """Its keys by fingerprint (the keyid of its DSSE envelopes)."""
        return {key.fingerprint(): key for key in self.keys}

    def compromised_signer(self, signature: bytes, data: bytes) -> str | None:
        """When *signature* is by one of its keys reported compromised: since when (what
        that key signed from then on is not trusted); else None."""
        for key, since in self.compromised:
            if key.verify(signature, data):
                return since
        return None


@dataclass(frozen=True)
class Actor:
    """An authenticated principal holding its unlocked signing key."""

    principal: Principal
    signing_key: Signer
    via: str

    @property
    def name(self) -> str:
        return self.principal.name

    def __repr__(self) -> str:
        return f"Actor({self.principal.name}, via={self.via})"


def _key_context(principal_id: str) -> bytes:
    return f"sealml/principal-key/v1:{principal_id}".encode()


class PrincipalStore:
    """Creates, loads and authenticates principals.

    *verifier* checks row attestations; *attestor* (the workspace signing key) is needed
    only to create or change principals and is fetched lazily; *anchor* checks every row
    read against the state the ledger's checkpoints anchor.
    """

    def __init__(
        self,
        verifier: VerifyingKey,
        attestor: Callable[[], Signer],
        kdf_params: Argon2idParams,
        anchor: Anchor | None = None,
    ) -> None:
        self._verifier = verifier
        self._attestor = attestor
        self._kdf = kdf_params
        self._anchor = anchor or Anchor(lambda session: None)

    # -- records --------------------------------------------------------------------------

    @staticmethod
    def _record(row: PrincipalRow) -> dict[str, Any]:
        return {
            "v": 1,
            "id": row.id,
            "name": row.name,
            "kind": row.kind,
            "roles": json.loads(row.roles),
            "public_key": row.public_key,
            "disabled": bool(row.disabled),
            "created_at": row.created_at,
            "created_by": row.created_by,
            # Only when set, so records from before these members existed keep their bytes.
            **({"retired_keys": json.loads(row.retired_keys)} if row.retired_keys else {}),
            **({"password_reset_by": row.password_reset_by} if row.password_reset_by else {}),
        }

    def _attest(self, session: Session, row: PrincipalRow) -> None:
        row.record = canonical_json(self._record(row))
        row.attestation = self._attestor().sign(row.record)
        mark_changed(session, row.id)

    def attest_again(self, session: Session, signer: Signer) -> int:
        """Check every principal record, then attest each with *signer* (a workspace key
        rotation); a record that does not verify raises IntegrityError before any is
        signed, so a rotation never launders an altered row."""
        rows = list(session.execute(select(PrincipalRow)).scalars())
        for row in rows:
            self._verified(row)
        for row in rows:
            row.attestation = signer.sign(row.record)
        return len(rows)

    def use_verifier(self, verifier: VerifyingKey) -> None:
        """Check records with *verifier* from now on (the workspace key was rotated)."""
        self._verifier = verifier

    def _verified(self, row: PrincipalRow) -> Principal:
        try:
            current = canonical_json(self._record(row))
        except ValueError:
            current = b""
        if current != row.record or not self._verifier.verify(row.attestation, row.record):
            raise IntegrityError(
                f"principal {row.name!r} failed verification (its database row was altered)"
            )
        try:
            public_key = VerifyingKey.from_pem(row.public_key)
            history = json.loads(row.retired_keys or "[]")
            retired = tuple(VerifyingKey.from_pem(entry["pem"]) for entry in history)
            key_since = str(history[-1]["retired_at"]) if history else row.created_at
            compromised = tuple(
                (key, str(entry["compromised_since"]))
                for key, entry in zip(retired, history, strict=True)
                if entry.get("compromised_since")
            )
        except (KeyFormatError, KeyError, TypeError, IndexError):
            raise IntegrityError(f"principal {row.name!r} has an unreadable public key") from None
        return Principal(
            id=row.id,
            name=row.name,
            kind="service" if row.kind == "service" else "human",
            roles=tuple(json.loads(row.roles)),
            public_key=public_key,
            disabled=bool(row.disabled),
            created_at=row.created_at,
            created_by=row.created_by,
            password_stamp=hashlib.sha256((row.kdf or "").encode()).hexdigest()[:16],
            retired_keys=retired,
            key_since=key_since,
            compromised=compromised,
            password_reset_by=row.password_reset_by,
        )

    # -- queries --------------------------------------------------------------------------

    def _row(self, session: Session, name: str) -> PrincipalRow:
        row = session.execute(
            select(PrincipalRow).where(PrincipalRow.name == name)
        ).scalar_one_or_none()
        if row is None:
            raise NotFoundError(f"no principal named {name!r}")
        return row

    def get(self, session: Session, name: str) -> Principal:
        return self._read(session, "name = ?", name, f"no principal named {name!r}")

    def get_by_id(self, session: Session, principal_id: str) -> Principal:
        return self._read(session, "id = ?", principal_id, f"no principal with id {principal_id}")

    def _read(self, session: Session, where: str, value: str, missing: str) -> Principal:
        """The one principal matching *where*, verified and checked against the anchored
        state (read-only: see :meth:`_row`)."""

        def fetch() -> list[PrincipalRow]:
            return select_rows(session, PrincipalRow, where, (value,))

        found = self._read_anchored(session, fetch)
        if not found:
            raise NotFoundError(missing)
        return found[0]

    def all(self, session: Session) -> list[Principal]:
        def fetch() -> list[PrincipalRow]:
            query = select(PrincipalRow).order_by(PrincipalRow.name)
            return list(session.execute(query).scalars())

        return self._read_anchored(session, fetch)

    def _read_anchored(
        self, session: Session, fetch: Callable[[], list[PrincipalRow]]
    ) -> list[Principal]:
        """The rows *fetch* reads, each verified and checked against the anchored state.
        In a write transaction on PostgreSQL each statement reads at its own moment, so a
        change committed between reading the rows and the state is looked at again (read
        transactions have one snapshot and see the same every time)."""
        for attempt in range(_ANCHOR_READS):
            rows = fetch()
            principals = [self._verified(row) for row in rows]
            try:
                self._anchor.check_principals(session, rows)
            except IntegrityError:
                if attempt + 1 == _ANCHOR_READS:
                    raise
                continue
            return principals
        raise AssertionError("unreachable")

    # -- changes --------------------------------------------------------------------------

    def create(
        self,
        session: Session,
        *,
        name: str,
        kind: Kind,
        roles: list[str],
        password: Secret | None,
        created_by: str,
        created_at: str,
        key_maker: Callable[[str], Signer] | None = None,
    ) -> tuple[Principal, Signer]:
        """Create a principal with a fresh ECDSA P-256 key (made by *key_maker*, given the
        principal's id, when the key lives elsewhere: a PKCS#11 token); returns it with
        the private key."""
        check_name(name)
        if (
            session.execute(select(PrincipalRow.id).where(PrincipalRow.name == name)).first()
            is not None
        ):
            raise UsageError(f"a principal named {name!r} already exists")
        principal_id = uuid.uuid4().hex
        key = key_maker(principal_id) if key_maker else SigningKey.generate("ecdsa-p256")
        row = PrincipalRow(
            id=principal_id,
            name=name,
            kind=kind,
            roles=json.dumps(sorted(set(roles))),
            public_key=key.public_key.pem(),
            disabled=False,
            created_at=created_at,
            created_by=created_by,
        )
        if kind == "human":
            if password is None:
                raise UsageError("a human principal needs a password")
            self._seal_key(row, key, password)
        self._attest(session, row)
        session.add(row)
        session.flush()
        return self._verified(row), key

    def _seal_key(self, row: PrincipalRow, key: Signer, password: Secret) -> None:
        """Seal a human's private key under a key derived from *password* (fresh salt)."""
        if not isinstance(key, SigningKey):
            raise UsageError("a person's key is sealed under their password, not kept in a token")
        if len(password.reveal()) < MIN_PASSWORD_LENGTH:
            raise UsageError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        salt = new_salt()
        sealing_key = derive_key(password, salt, self._kdf)
        row.key_box = seal_box(sealing_key, key.pkcs8_der(), _key_context(row.id))
        row.kdf = json.dumps({"salt": salt.hex(), **self._kdf.to_dict()})

    def set_password(self, session: Session, actor: Actor, password: Secret) -> None:
        """Seal *actor*'s private key (unlocked by their current password) under a new
        *password*; the key and so every signature made with it stay the same."""
        row = self._row(session, actor.name)
        if self._verified(row).kind != "human":
            raise UsageError(f"{actor.name!r} is a service principal; it has no password")
        self._seal_key(row, actor.signing_key, password)
        row.password_reset_by = None  # their own password again
        self._attest(session, row)
        session.flush()

    def replace_key(
        self,
        session: Session,
        name: str,
        retired_at: str,
        password: Secret | None,
        compromised_since: str | None = None,
        reset_by: str | None = None,
        key_maker: Callable[[str], Signer] | None = None,
    ) -> tuple[Principal, Signer]:
        """Give *name* a fresh ECDSA P-256 key (a person's sealed under *password*; a
        service's made by *key_maker* when it lives in a token) and keep the old public
        key as retired, so what it signed still verifies (with *compromised_since*, only
        what it signed before that time)."""
        row = self._row(session, name)
        principal = self._verified(row)
        key = key_maker(row.id) if key_maker else SigningKey.generate("ecdsa-p256")
        retired = json.loads(row.retired_keys or "[]")
        entry = {"pem": row.public_key, "retired_at": retired_at}
        if compromised_since is not None:
            entry["compromised_since"] = compromised_since
        retired.append(entry)
        row.retired_keys = json.dumps(retired)
        row.public_key = key.public_key.pem()
        if principal.kind == "human":
            if password is None:
                raise UsageError("a person's new key is sealed under their password")
            self._seal_key(row, key, password)
        if reset_by is not None:
            row.password_reset_by = reset_by
        self._attest(session, row)
        session.flush()
        return self._verified(row), key

    def set_disabled(self, session: Session, name: str, disabled: bool) -> Principal:
        row = self._row(session, name)
        self._verified(row)
        row.disabled = disabled
        self._attest(session, row)
        session.flush()
        return self._verified(row)

    def set_roles(self, session: Session, name: str, roles: list[str]) -> Principal:
        """Replace a principal's roles (the record is attested again)."""
        row = self._row(session, name)
        self._verified(row)
        row.roles = json.dumps(sorted(set(roles)))
        self._attest(session, row)
        session.flush()
        return self._verified(row)

    # -- authentication -------------------------------------------------------------------

    def authenticate_password(self, session: Session, name: str, password: Secret) -> Actor:
        """Unlock a human principal's signing key with their password."""
        try:
            row = self._row(session, name)
        except NotFoundError:
            # Spend what a real check spends, so the time taken does not tell which
            # user names exist.
            derive_key(password, new_salt(), self._kdf)
            raise AuthenticationError("unknown user or wrong password") from None
        principal = self._verified(row)
        self._anchor.check_principals(session, [row])
        if principal.kind != "human" or row.key_box is None or row.kdf is None:
            raise AuthenticationError(f"{name!r} is a service principal; use its key file")
        try:
            kdf = json.loads(row.kdf)
            params = Argon2idParams.from_dict(kdf)
            salt = bytes.fromhex(kdf["salt"])
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"principal {name!r} has malformed key parameters") from None
        try:
            der = open_box(derive_key(password, salt, params), row.key_box, _key_context(row.id))
        except BoxOpenError:
            raise AuthenticationError("unknown user or wrong password") from None
        return self._activate(principal, SigningKey.from_pkcs8(der), "password")

    def authenticate_key(
        self,
        session: Session,
        name: str,
        key: Signer,
        via: str = "key-file",
        *,
        services_only: bool = False,
    ) -> Actor:
        """Authenticate a principal by its private key (with *services_only*, refuse a
        person: people log in with their password, and TOTP where enrolled)."""
        principal = self.get(session, name)
        if services_only and principal.kind != "service":
            raise AuthenticationError(f"{name!r} is a person; log in with the password")
        return self.act_with_key(principal, key, via)

    def act_with_key(self, principal: Principal, key: Signer, via: str) -> Actor:
        """Act as *principal* (read and verified by this store) with its private *key*."""
        if key.public_key != principal.public_key:
            raise AuthenticationError(f"the key file does not belong to {principal.name!r}")
        return self._activate(principal, key, via)

    @staticmethod
    def _activate(principal: Principal, key: Signer, via: str) -> Actor:
        if principal.disabled:
            raise AuthenticationError(f"principal {principal.name!r} is disabled")
        if key.public_key != principal.public_key:
            raise IntegrityError(f"principal {principal.name!r} key does not match its record")
        if principal.password_reset_by is not None:
            # Until they choose their own password they hold no role: every check refuses.
            principal = replace(principal, roles=())
        return Actor(principal, key, via)
