"""TOTP enrolment and checking for the principals of a workspace (secrets sealed under a
keystore secret, each time step accepted once)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from ..access import totp
from ..access.anchor import mark_changed
from ..clock import utc_now
from ..crypto.box import BoxOpenError, open_box, seal_box
from ..db.models import TotpRow
from ..errors import AuthenticationError, IntegrityError, UsageError
from .core import WorkspaceCore

TOTP_SECRET = "totp-key"  # noqa: S105 (a keystore entry name)


@dataclass(frozen=True)
class TotpEnrolment:
    """A new TOTP secret, shown once."""

    secret: str
    uri: str

    def __repr__(self) -> str:
        return "TotpEnrolment(secret=<hidden>)"


class TotpOperations(WorkspaceCore):
    """``sealml user totp-enroll`` and the check behind approvals."""

    def totp_enroll(self, current_code: str | None = None) -> TotpEnrolment:
        """Give the acting principal a new TOTP secret. Replacing an existing one needs a
        valid code from it, so a stolen password alone cannot re-enrol."""
        actor = self.require_actor()
        if actor.principal.password_reset_by is not None:
            raise UsageError(
                "your password was reset: set your own first (`sealml user passwd`), then enrol"
            )
        secret = totp.new_secret()
        context = f"sealml totp {actor.principal.id}".encode()
        box = seal_box(self.named_secret(TOTP_SECRET), secret.encode(), context)
        with self.transaction() as session:
            row = session.get(TotpRow, actor.principal.id)
            if row is not None:
                if current_code is None:
                    raise UsageError("a TOTP secret exists; give a current code to replace it")
                self._accept_code(row, current_code)
                row.secret_box, row.last_step, row.created_at = box, 0, utc_now()
            else:
                session.add(
                    TotpRow(
                        principal_id=actor.principal.id,
                        secret_box=box,
                        last_step=0,
                        created_at=utc_now(),
                    )
                )
            mark_changed(session, actor.principal.id)
            self.append(session, [self.event("user.totp-enroll", f"principal:{actor.name}")])
        issuer = f"sealml {self.config.workspace.name}"
        return TotpEnrolment(secret, totp.provisioning_uri(secret, actor.name, issuer))

    def totp_enrolled(self) -> bool:
        """Whether the acting principal has a TOTP secret."""
        actor = self.require_actor()
        with self.db.read() as session:
            return session.get(TotpRow, actor.principal.id) is not None

    def totp_enrolled_ids(self) -> set[str]:
        """The ids of the principals that have a TOTP secret (needs ``user:read``)."""
        self.authorize("user:read", "principal:*", action="user.list")
        with self.db.read() as session:
            return set(session.execute(select(TotpRow.principal_id)).scalars())

    def totp_check(self, code: str) -> None:
        """Accept *code* from the acting principal's TOTP secret, once (its time step is
        burnt), or raise AuthenticationError; the refusal is written to the ledger."""
        actor = self.require_actor()
        try:
            with self.transaction() as session:
                row = session.get(TotpRow, actor.principal.id)
                if row is None:
                    raise AuthenticationError(f"{actor.name} has no TOTP secret")
                self._accept_code(row, code)
        except AuthenticationError:
            resource = f"principal:{actor.name}"
            self.record([self.event("auth.totp", resource, "denied")])
            raise

    def _accept_code(self, row: TotpRow, code: str) -> None:
        """Check *code* against a principal's secret and burn its time step."""
        context = f"sealml totp {row.principal_id}".encode()
        try:
            secret = open_box(self.named_secret(TOTP_SECRET), row.secret_box, context).decode()
        except BoxOpenError:
            raise IntegrityError("the stored TOTP secret failed authentication") from None
        row.last_step = totp.accept(secret, code, row.last_step)
