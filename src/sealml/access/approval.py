"""The approved policy: signed by the workspace key and kept in the database.

``sealml.toml`` proposes roles, model registry rules (gates, the two-person rule), the
model server's settings (who may call it, what it answers, its limits) and monitoring's
(alert rules, their actions, where alerts go); only what an administrator approved
(``sealml policy approve``) is in force. The approved record is signed by the workspace
key, so neither an edit of the configuration file nor an edit of the database grants a
permission, lifts a gate, trusts another token issuer, loosens what a server answers or
silences an alert.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from ..config import Config, MonitorSection, RegistrySection, ServeSection
from ..crypto.canonical import canonical_json, parse_json
from ..crypto.signing import Signer, VerifyingKey
from ..db.meta import read_meta, write_meta
from ..db.models import MetaEntry
from ..db.raw import select_rows
from ..errors import IntegrityError
from .policy import Policy

_RECORD = "policy"
_SIGNATURE = "policy_signature"


def roles_record(roles: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The comparable form of a role map: role → sorted, unique permission patterns."""
    return {role: sorted(set(patterns)) for role, patterns in roles.items()}


@dataclass(frozen=True)
class ApprovedPolicy:
    """The policy in force and who approved it."""

    policy: Policy
    roles: dict[str, list[str]]
    approved_by: str
    approved_at: str
    digest: str
    registry: RegistrySection
    serve: ServeSection
    monitor: MonitorSection

    def differs_from(self, config: Config) -> bool:
        """Whether *config* proposes anything other than what is in force."""
        return (
            roles_record(config.access.roles) != self.roles
            or config.registry != self.registry
            or config.serve != self.serve
            or config.monitor != self.monitor
        )


def approve(
    session: Session, config: Config, *, approved_by: str, approved_at: str, signer: Signer
) -> ApprovedPolicy:
    """Sign the roles, registry rules, serving and monitoring settings *config* proposes as
    the policy in force."""
    record = canonical_json(
        {
            "v": 1,
            "roles": roles_record(config.access.roles),
            "registry": config.registry.model_dump(),
            "serve": config.serve.model_dump(),
            "monitor": config.monitor.model_dump(),
            "approved_by": approved_by,
            "approved_at": approved_at,
        }
    )
    signature = base64.b64encode(signer.sign(record)).decode()
    write_meta(session, _RECORD, record.decode())
    write_meta(session, _SIGNATURE, signature)
    return _parse(record)


def load(session: Session, verifier: VerifyingKey) -> ApprovedPolicy:
    """The approved policy; raises IntegrityError if it is missing or was altered."""
    entries = {
        entry.key: entry
        for entry in select_rows(session, MetaEntry, "key IN (?, ?)", (_RECORD, _SIGNATURE))
    }
    record, signature = entries.get(_RECORD), entries.get(_SIGNATURE)
    if record is None or signature is None:
        raise IntegrityError("the workspace has no approved policy")
    try:
        signature_bytes = base64.b64decode(signature.value, validate=True)
    except (ValueError, binascii.Error):
        signature_bytes = b""
    body = record.value.encode()
    if not verifier.verify(signature_bytes, body):
        raise IntegrityError("the approved policy failed verification (database altered)")
    return _parse(body)


def record_digest(session: Session) -> str | None:
    """The hex SHA-256 of the approved policy's record as stored (not checked), None when
    there is none: what checkpoints anchor (:mod:`sealml.access.anchor`)."""
    record = read_meta(session, _RECORD)
    return None if record is None else hashlib.sha256(record.encode()).hexdigest()


def sign_again(session: Session, verifier: VerifyingKey, signer: Signer) -> None:
    """Check the approved policy with *verifier*, then sign the same record with *signer*
    (a workspace key rotation; an altered record raises IntegrityError)."""
    load(session, verifier)
    record = read_meta(session, _RECORD)
    assert record is not None  # load found it
    write_meta(session, _SIGNATURE, base64.b64encode(signer.sign(record.encode())).decode())


def _parse(body: bytes) -> ApprovedPolicy:
    try:
        data: Any = parse_json(body)
        roles = {str(role): [str(p) for p in patterns] for role, patterns in data["roles"].items()}
        registry = RegistrySection.model_validate(data.get("registry", {}))
        # A record from before serving and monitoring settings were approved approves
        # their defaults.
        serve = ServeSection.model_validate(data.get("serve", {}))
        monitor = MonitorSection.model_validate(data.get("monitor", {}))
        return ApprovedPolicy(
            policy=Policy(roles),
            roles=roles,
            approved_by=str(data["approved_by"]),
            approved_at=str(data["approved_at"]),
            digest=hashlib.sha256(body).hexdigest(),
            registry=registry,
            serve=serve,
            monitor=monitor,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError("the approved policy is unreadable") from None
