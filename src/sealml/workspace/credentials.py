"""Changing credentials: your password, a principal's signing key or roles, a lost TOTP
device, the keystore passphrase. Each change is audited, and every signature made before
stays valid (a rotated key stays on the principal's record, retired, to verify them)."""

from __future__ import annotations

import hmac

from sqlalchemy import delete
from sqlalchemy.orm import Session

from ..access.anchor import mark_changed
from ..access.principals import Principal
from ..clock import normalised, utc_now
from ..crypto.secret import Secret
from ..crypto.signing import Signer, SigningKey
from ..db.models import SessionRow, TotpRow
from ..errors import AuthenticationError, NotFoundError, UsageError
from ..keys.pkcs11 import TokenEcdsaKey
from .totp import TotpOperations


class CredentialOperations(TotpOperations):
    """``sealml user passwd | reset-password | rotate-key | roles | totp-reset``, ``sealml
    keys passphrase``."""

    def change_password(self, current: Secret, new: Secret, totp_code: str | None = None) -> None:
        """Re-seal the acting human's private key under *new* after checking *current*;
        every session of theirs ends (log in again with the new password).

        After a password reset the current password is one an admin chose: a person with a
        TOTP secret then confirms with *totp_code*, so the admin cannot set the final
        password in their place."""
        actor = self.require_actor()
        resource = f"principal:{actor.name}"
        if actor.principal.kind != "human":
            raise UsageError(f"{actor.name!r} is a service principal; it has no password")
        if hmac.compare_digest(current.reveal(), new.reveal()):
            raise UsageError("the new password is the same as the current one")
        if actor.principal.password_reset_by is not None and self.totp_enrolled():
            if not totp_code:
                raise UsageError(
                    "after a password reset, confirm with a code from your authenticator "
                    "(SEALML_TOTP_CODE or --code)"
                )
            self.totp_check(totp_code)
        try:
            with self.transaction() as session:
                unlocked = self.principals.authenticate_password(session, actor.name, current)
                self.principals.set_password(session, unlocked, new)
                ended = delete(SessionRow).where(SessionRow.principal_id == actor.principal.id)
                session.execute(ended)
                self.append(session, [self.event("user.password", resource)])
        except AuthenticationError:
            self.record([self.event("user.password", resource, "denied")])
            raise AuthenticationError("the current password is wrong") from None

    def rotate_signing_key(
        self,
        name: str | None = None,
        password: Secret | None = None,
        compromised_since: str | None = None,
    ) -> tuple[Principal, Principal, SigningKey | None]:
        """Give a principal a fresh signing key; the old public key stays on its record as
        retired, so everything it signed still verifies, and its sessions end. With
        *compromised_since* (a time, not in the future), only what the ledger shows was
        signed before then still verifies, and signatures outside the workspace (which
        carry no trusted time) by the old key not at all.

        A person rotates their own key, confirming with *password* (the new key is sealed
        under it). A service's key is rotated by a user admin or by the service itself;
        the new private key is returned (write it to a 0600 file). Returns the principal
        before and after, and that key.
        """
        actor = self.require_actor()
        target = name or actor.name
        resource = f"principal:{target}"
        if target != actor.name:
            self.authorize("user:admin", resource, action="user.rotate-key")
        if compromised_since is not None:
            try:
                compromised_since = normalised(compromised_since)
            except ValueError:
                raise UsageError("the compromise time must be an ISO 8601 date or time") from None
            if compromised_since > utc_now():
                raise UsageError("the compromise time is in the future")
        held: TokenEcdsaKey | None = None
        try:
            with self.transaction() as session:
                before = self.principals.get(session, target)
                if before.kind == "human":
                    if target != actor.name:
                        raise UsageError(f"{target} is a person; they rotate their own key")
                    if password is None:
                        raise UsageError("confirm a new key with your password")
                    self.principals.authenticate_password(session, target, password)
                held = self.token_key_of(before)  # a key in the token: its successor too
                after, key = self._replace_key(
                    session,
                    "user.rotate-key",
                    before,
                    password,
                    compromised_since,
                    in_token=held is not None,
                )
        except AuthenticationError:
            self.record([self.event("user.rotate-key", resource, "denied")])
            raise AuthenticationError("the password is wrong") from None
        if held is not None:
            self.opened_token().destroy_signing_key(held)  # its public half stays on record
        if target == actor.name:
            self.actor = self.principals.act_with_key(after, key, actor.via)
        return (
            before,
            after,
            key if isinstance(key, SigningKey) and after.kind == "service" else None,
        )

    def reset_password(self, name: str, password: Secret) -> tuple[Principal, Principal]:
        """Give a person who forgot their password a new one (``user:admin``, never your
        own). Their private key was sealed under the old password, so it is lost: they get
        a new signing key, the old one stays retired to verify what it signed. Their
        sessions end; TOTP stays as it was. Until they change the password themselves they
        may do nothing else. Returns the principal before and after."""
        actor = self.authorize("user:admin", f"principal:{name}", action="user.reset-password")
        if name == actor.name:
            raise UsageError("change your own password with `sealml user passwd`")
        with self.transaction() as session:
            before = self.principals.get(session, name)
            if before.kind != "human":
                raise UsageError(f"{name} is a service; it has no password (rotate its key)")
            after, _ = self._replace_key(
                session, "user.reset-password", before, password, reset_by=actor.name
            )
        return before, after

    def _replace_key(
        self,
        session: Session,
        action: str,
        before: Principal,
        password: Secret | None,
        compromised_since: str | None = None,
        reset_by: str | None = None,
        in_token: bool = False,
    ) -> tuple[Principal, Signer]:
        """Give *before* a new key (the old one retired; *in_token*: the new one generated
        in the PKCS#11 token), end its sessions, record *action* with both fingerprints."""
        maker = self.opened_token().create_principal_key if in_token else None
        after, key = self.principals.replace_key(
            session, before.name, utc_now(), password, compromised_since, reset_by, maker
        )
        session.execute(delete(SessionRow).where(SessionRow.principal_id == after.id))
        event = self.event(
            action,
            f"principal:{before.name}",
            retired=before.public_key.fingerprint(),
            current=after.public_key.fingerprint(),
            compromised_since=compromised_since,
        )
        self.append(session, [event])
        return after, key

    def set_user_roles(self, name: str, roles: list[str]) -> tuple[Principal, Principal]:
        """Replace *name*'s roles (``user:admin``); returns the principal before and after.
        The change applies to their running sessions at once."""
        actor = self.authorize("user:admin", f"principal:{name}", action="user.roles")
        self.policy.check_assignable(roles)
        if name == actor.name and not self.policy.allows(tuple(roles), "user:admin"):
            raise UsageError("these roles would take user:admin away from you; refusing")
        with self.transaction() as session:
            before = self.principals.get(session, name)
            after = self.principals.set_roles(session, name, roles)
            self.append(
                session,
                [
                    self.event(
                        "user.roles",
                        f"principal:{name}",
                        before=list(before.roles),
                        after=list(after.roles),
                    )
                ],
            )
        return before, after

    def reset_totp(self, name: str) -> None:
        """Forget *name*'s TOTP secret (a lost device) so they can enrol again without a
        code from the old one; not your own: another admin must do it."""
        actor = self.authorize("user:admin", f"principal:{name}", action="user.totp-reset")
        if name == actor.name:
            raise UsageError("you cannot reset your own TOTP secret; ask another user admin")
        with self.transaction() as session:
            principal = self.principals.get(session, name)
            row = session.get(TotpRow, principal.id)
            if row is None:
                raise NotFoundError(f"{name} has no TOTP secret")
            session.delete(row)
            mark_changed(session, principal.id)
            self.append(session, [self.event("user.totp-reset", f"principal:{name}")])

    def change_passphrase(self, current: Secret, new: Secret) -> None:
        """Seal the keystore's keys and secrets under *new* after checking *current*
        (``keys:admin``). Other processes holding the keystore open keep working until
        they next change it; restart long-running servers.

        The key-encryption keys stay the same: backups made before still open with the
        old passphrase, so after a leak also run :meth:`rotate_keys`.
        """
        self.authorize("keys:admin", "keys", action="keys.passphrase")
        try:
            self.keystore.change_passphrase(current, new, self.kdf_params)
        except AuthenticationError:
            self.record([self.event("keys.passphrase", "keys", "denied")])
            raise
        self._passphrase = new
        self.record([self.event("keys.passphrase", "keys")])
