"""Principal management and authentication: users, services, logins, sessions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from sqlalchemy import delete
from sqlalchemy.orm import Session

from ..access import approval, sessions
from ..access.anchor import mark_policy_changed
from ..access.approval import ApprovedPolicy
from ..access.policy import Policy
from ..access.principals import Actor, Principal, check_name
from ..access.sessions import SessionTicket
from ..clock import utc_now
from ..crypto.secret import Secret
from ..crypto.signing import SigningKey
from ..db.models import SessionRow
from ..errors import AuthenticationError, NotFoundError, UsageError
from ..keys.pkcs11 import TokenEcdsaKey
from ..ledger import EventDraft
from .core import WorkspaceCore


class UserOperations(WorkspaceCore):
    """Create, list and disable principals; log in by password, key file or session."""

    def check_new_user(self, name: str, roles: list[str]) -> None:
        """Raise UsageError unless a principal *name* with *roles* could be added now (so
        that nobody is asked for a password that cannot be used)."""
        check_name(name)
        self.policy.check_assignable(roles)
        with self.db.read() as session, contextlib.suppress(NotFoundError):
            self.principals.get(session, name)
            raise UsageError(f"a principal named {name!r} already exists")

    def add_user(
        self,
        name: str,
        roles: list[str],
        *,
        password: Secret | None = None,
        service: bool = False,
        key_in_token: bool = False,
    ) -> tuple[Principal, SigningKey | None]:
        """Create a principal. A service gets its private key back (write it to a 0600
        file), unless *key_in_token*: then the key is generated in the workspace's PKCS#11
        token and never leaves it. A human's key is sealed under their password and never
        returned."""
        self.check_new_user(name, roles)
        actor = self.authorize("user:admin", f"principal:{name}", action="user.add")
        if key_in_token and not service:
            raise UsageError("only a service's key is kept in the token; people use passwords")
        made: list[TokenEcdsaKey] = []

        def in_token(principal_id: str) -> TokenEcdsaKey:
            made.append(self.opened_token().create_principal_key(principal_id))
            return made[-1]

        try:
            with self.transaction() as session:
                principal, key = self.principals.create(
                    session,
                    name=name,
                    kind="service" if service else "human",
                    roles=roles,
                    password=None if service else password,
                    created_by=actor.name,
                    created_at=utc_now(),
                    key_maker=in_token if key_in_token else None,
                )
                event = self.event(
                    "user.add",
                    f"principal:{name}",
                    roles=sorted(roles),
                    kind=principal.kind,
                    key_fingerprint=principal.public_key.fingerprint(),
                    key_in_token=key_in_token,
                )
                self.append(session, [event])
        except BaseException:
            for orphan in made:
                self.opened_token().destroy_signing_key(orphan)
            raise
        return principal, key if isinstance(key, SigningKey) and service else None

    def users(self) -> list[Principal]:
        """Every principal (needs ``user:read``)."""
        self.authorize("user:read", "principal:*", action="user.list")
        with self.db.read() as session:
            return self.principals.all(session)

    def public_key(self, name: str | None = None) -> Principal:
        """A principal's record with its public signing key, as the workspace key attests
        it: your own, or anyone's with ``user:read``."""
        actor = self.require_actor()
        if name is None or name == actor.name:
            return actor.principal
        self.authorize("user:read", f"principal:{name}", action="user.public-key")
        with self.db.read() as session:
            return self.principals.get(session, name)

    def set_user_disabled(self, name: str, disabled: bool) -> Principal:
        """Disable (or re-enable) a principal; disabling also ends its sessions."""
        action = "user.disable" if disabled else "user.enable"
        actor = self.authorize("user:admin", f"principal:{name}", action=action)
        if disabled and name == actor.name:
            raise UsageError("you cannot disable yourself")
        with self.transaction() as session:
            principal = self.principals.set_disabled(session, name, disabled)
            if disabled:
                session.execute(delete(SessionRow).where(SessionRow.principal_id == principal.id))
            self.append(session, [self.event(action, f"principal:{name}")])
        return principal

    def approve_policy(self) -> ApprovedPolicy:
        """Put the roles, registry rules, serving and monitoring settings proposed in
        sealml.toml into force, signed by the workspace key."""
        actor = self.authorize("policy:admin", "policy", action="policy.approve")
        proposed = Policy(self.config.access.roles)
        if not proposed.allows(actor.principal.roles, "policy:admin"):
            raise UsageError(
                "the proposed roles would take policy:admin away from you; refusing to approve"
            )
        with self.transaction() as session:
            self.approved = approval.approve(
                session,
                self.config,
                approved_by=actor.name,
                approved_at=utc_now(),
                signer=self.note_signer.key,
            )
            mark_policy_changed(session)
            self.append(
                session, [self.event("policy.approve", "policy", sha256=self.approved.digest)]
            )
        return self.approved

    # -- authentication -------------------------------------------------------------------

    def _authenticate(self, name: str, via: str, check: Callable[[Session], Actor]) -> Actor:
        try:
            with self.db.read() as session:
                actor = check(session)
        except AuthenticationError as error:
            self.record(
                [EventDraft(name, "auth.login", f"principal:{name}", "denied", {"via": via})]
            )
            raise error from None
        self.actor = actor
        self.record([EventDraft(name, "auth.login", f"principal:{name}", "ok", {"via": via})])
        return actor

    def login(self, name: str, password: Secret) -> Actor:
        """Authenticate by password and act as *name* from now on."""
        return self._authenticate(
            name, "password", lambda s: self.principals.authenticate_password(s, name, password)
        )

    def login_with_key(self, name: str, key: SigningKey) -> Actor:
        """Authenticate a service principal by its private key and act as *name*."""
        return self._authenticate(
            name,
            "key-file",
            lambda s: self.principals.authenticate_key(s, name, key, services_only=True),
        )

    def login_with_token_key(self, name: str) -> Actor:
        """Authenticate a service principal by its key in the workspace's PKCS#11 token
        (the token's PIN opens it) and act as *name*."""

        def check(session: Session) -> Actor:
            principal = self.principals.get(session, name)
            if principal.kind != "service":
                raise AuthenticationError(f"{name!r} is a person; log in with the password")
            key = self.token_key_of(principal)
            if key is None:
                raise AuthenticationError(f"the token holds no current key of {name!r}")
            return self.principals.act_with_key(principal, key, "token")

        return self._authenticate(name, "token", check)

    def start_session(self, keep_keystore: bool = True) -> SessionTicket:
        """Issue a session ticket for the acting principal (``sealml login``); with
        *keep_keystore* and the keystore unlocked, the ticket unlocks it again."""
        actor = self.require_actor()
        ttl = self.config.access.session_ttl_minutes * 60
        keystore_key = self.keystore.session_key if keep_keystore and self.unlocked else None
        with self.transaction() as session:
            current = self.principals.get(session, actor.name)
            if current.password_stamp != actor.principal.password_stamp:
                # a login from before a password change mints no session that outlives it
                raise AuthenticationError(
                    f"the password of {actor.name} changed since this login; log in again"
                )
            sessions.purge_expired(session)
            ticket = sessions.issue(session, actor, ttl, keystore_key)
            self.append(
                session,
                [self.event("auth.session", f"principal:{actor.name}", ttl_seconds=ttl)],
            )
        return ticket

    def resume_session(self, ticket: SessionTicket) -> Actor:
        """Act as the principal of a session ticket (no password needed until it expires);
        a ticket issued with the keystore unlocked unlocks it again without the KDF."""
        try:
            with self.db.read() as session:
                resumed = sessions.resume(session, self.principals, ticket)
        except AuthenticationError:
            with self.db.write() as session:  # the refusal rolled back; expired rows go now
                sessions.purge_expired(session)
            raise
        self.actor = resumed.actor
        if resumed.keystore_key is not None and not self.unlocked:
            with contextlib.suppress(AuthenticationError):  # passphrase changed since login
                self.unlock_with_key(resumed.keystore_key)
        return self.actor

    def end_session(self, ticket: SessionTicket) -> bool:
        """Revoke a session ticket (``sealml logout``)."""
        with self.transaction() as session:
            existed = sessions.revoke(session, ticket.token)
            self.append(
                session,
                [
                    EventDraft(
                        ticket.principal, "auth.logout", f"principal:{ticket.principal}", "ok", {}
                    )
                ],
            )
        return existed
