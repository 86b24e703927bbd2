"""Key operations: KEK rotation, moving the KEKs into a PKCS#11 token, and rotating the
workspace key (the one that signs checkpoints, principal records, the approved policy and
API keys).

Both re-wrap data keys only (sealed bodies are never touched) while holding the ledger, so
a process that keeps the workspace open and seals meanwhile wraps again under the new KEK
before it commits (see :meth:`SealedArtifact.wrap_under_current`).
"""

from __future__ import annotations

from typing import Any

from ..access import approval
from ..config import CONFIG_NAME, STATE_DIR, set_options
from ..crypto.secret import Secret
from ..crypto.signing import Signer, SigningKey
from ..errors import UsageError
from ..fsutil import write_private
from ..keys.pkcs11 import Pkcs11Provider, TokenSettings, TokenSigningKey
from ..keys.provider import KeyProvider, rewrap_all
from ..ledger import Ledger, NoteSigner
from ..ledger.keyhistory import ROTATION, KeyHistory, note_rotation
from ..store.datakeys import DatabaseDataKeys
from . import apikeys
from .core import ROTATION_MARKER, SIGNING_NEXT_SECRET, SIGNING_SECRET, WorkspaceCore


class KeyOperations(WorkspaceCore):
    """``sealml keys rotate | migrate | rotate-workspace-key``."""

    def key_summary(self) -> dict[str, Any]:
        """Where the workspace's keys are and how old (an access review's view; nothing
        secret): the KEK provider and its current KEK, the workspace key's verifier key,
        whether a token holds it, its rotations and since when it is in use, and which
        services sign with a key kept in the token."""
        self.authorize("user:read", "keys", action="keys.summary")
        with self.db.read() as session:
            principals = self.principals.all(session)
        provider = self.keys
        history = self.key_history()
        return {
            "provider": provider.name,
            "kek": provider.current_kek_id(),
            "verifier": self.verifier.encode(),
            "workspace_key_in_token": isinstance(self.note_signer.key, TokenSigningKey),
            "rotations": len(history.handovers),
            "since": self.workspace_key_since(history),
            "services_in_token": sorted(
                p.name for p in principals if self.token_key_of(p) is not None
            ),
            "superseded_workspace_keys": len(self.superseded_workspace_keys()),
        }

    def superseded_workspace_keys(self) -> list[TokenSigningKey | str]:
        """Copies of workspace keys no longer in force that an interrupted rotation left
        (keystore secret names, token keys): never used, since the configured verifier
        key picks the key, but private keys all the same."""
        current = self.note_signer.key
        held = self.keystore.secret_names()
        found: list[TokenSigningKey | str] = []
        for name in (SIGNING_SECRET, SIGNING_NEXT_SECRET):
            if name not in held:
                continue
            if isinstance(current, TokenSigningKey) or name == SIGNING_NEXT_SECRET:
                found.append(name)  # the one in force is SIGNING_SECRET or in the token
        if self.config.keys.provider == "pkcs11":
            found += [
                key for key in self.token.signing_keys() if key.public_key != current.public_key
            ]
        return found

    def _drop_superseded_workspace_keys(self) -> int:
        """Destroy what :meth:`superseded_workspace_keys` finds; how many."""
        superseded = self.superseded_workspace_keys()
        for each in superseded:
            if isinstance(each, str):
                self.keystore.delete_secret(each)
            else:
                self.token.destroy_signing_key(each)
        return len(superseded)

    def workspace_key_since(self, history: KeyHistory | None = None) -> str:
        """When the workspace key in force began: its rotation, else the workspace's start."""
        handovers = (history or self.key_history()).handovers
        if not handovers:
            return self.config.workspace.created_at
        with self.db.read() as session:
            return str(Ledger.event(session, handovers[-1].seq).fields()["ts"])

    def rotate_keys(self) -> dict[str, Any]:
        """Make a new KEK current, re-wrap every data key under it, destroy the old KEKs."""
        self.authorize("keys:admin", "keys", action="keys.rotate")
        provider = self.keys
        old = provider.kek_ids()
        new = provider.rotate()
        count = self._rewrap(provider, "keys.rotate", kek=new, destroyed=old)
        provider.destroy(old)
        self.db.truncate_journal()
        return {"kek": new, "rewrapped": count, "destroyed": old}

    def _rewrap(self, keys: KeyProvider, action: str, /, **details: Any) -> int:
        """Re-wrap every data key not under *keys*' current KEK and record *action*;
        returns how many changed. The ledger is held throughout: a writer that wrapped
        under an old KEK waits, then wraps again under the new one before it commits."""
        with self.transaction() as session:
            self.ledger.hold(session)
            count = rewrap_all(keys, DatabaseDataKeys(session))
            self.append(session, [self.event(action, "keys", rewrapped=count, **details)])
        return count

    def migrate_keys_to_token(self, settings: TokenSettings, pin: Secret) -> dict[str, Any]:
        """Move the workspace's KEKs from its keystore into the PKCS#11 token *settings*.

        A KEK is generated in the token (sensitive, not extractable), ``sealml.toml`` is
        pointed at the token (the rest of the file kept as written), every data key is
        re-wrapped under the token's KEK, and the keystore's KEKs are destroyed (a fresh,
        unused one stays, as in a workspace created with a token). The workspace signing
        key and named secrets stay in the keystore. Every step can be interrupted: data
        keys not yet re-wrapped still unwrap from the keystore, and running this again
        finishes the job.
        """
        self.authorize("keys:admin", "keys", action="keys.migrate")
        configured = self.config.keys
        if configured.provider == "pkcs11" and (configured.hsm_module, configured.hsm_token) != (
            settings.module,
            settings.token,
        ):
            raise UsageError(
                f"the workspace's KEKs are already in token {configured.hsm_token!r}; "
                "moving them from one token to another is not supported"
            )
        keystore = self.keystore
        token = Pkcs11Provider(settings, pin, self.config.workspace.id)
        try:
            if not token.kek_ids():
                token.rotate()
        except BaseException:
            token.close()
            raise
        if self._token is not None:
            self._token.close()
        self._token, self._token_pin = token, pin
        if configured.provider != "pkcs11":
            self.config = set_options(
                self.root / CONFIG_NAME,
                "keys",
                {"provider": "pkcs11", "hsm_module": settings.module, "hsm_token": settings.token},
            )
        old = keystore.kek_ids()
        # Processes that have not seen the migration yet wrap under this one, which stays.
        keystore.rotate()
        count = self._rewrap(
            self.keys,
            "keys.migrate",
            provider="pkcs11",
            token=settings.token,
            kek=token.current_kek_id(),
            destroyed=old,
        )
        keystore.destroy(old)
        self.db.truncate_journal()
        return {
            "token": settings.token,
            "kek": token.current_kek_id(),
            "rewrapped": count,
            "destroyed": old,
        }

    def rotate_workspace_key(self, *, in_token: bool = False) -> dict[str, Any]:
        """Replace the workspace key: a new Ed25519 key (in the PKCS#11 token when the old
        one is there, or with *in_token*; in the keystore otherwise) attests every
        principal record, the approved policy and every API key again (each checked under
        the old key first), the ledger records the handover (``keys.workspace-key``) in a
        checkpoint both keys sign, sealml.toml takes the new verifier key, and the old key
        is destroyed. Checkpoints signed before stay verifiable through that handover.

        Interrupted between the commit and the update of sealml.toml, the next opening of
        the workspace finishes the job; interrupted before the commit, nothing changed.
        """
        self.authorize("keys:admin", "keys", action="keys.workspace-key")
        marker = self.root / STATE_DIR / ROTATION_MARKER
        if marker.exists():
            raise UsageError("another workspace key rotation is under way; let it finish")
        old = self.note_signer
        keystore = self.keystore
        self._drop_superseded_workspace_keys()  # what an interrupted one left
        if in_token and self.config.keys.provider != "pkcs11":
            raise UsageError(
                "the workspace's keys are not in a PKCS#11 token: `sealml keys migrate` first"
            )
        to_token = in_token or isinstance(old.key, TokenSigningKey)
        staged: Signer
        if to_token:
            staged = self.token.create_signing_key()
        else:
            made = SigningKey.generate("ed25519")
            keystore.store_secret(SIGNING_NEXT_SECRET, made.pkcs8_der())
            staged = made
        new = NoteSigner(old.name, staged)
        write_private(marker, new.verifier.encode().encode("ascii"))
        try:
            with self.transaction() as session:
                self.ledger.hold(session)
                principals = self.principals.attest_again(session, new.key)
                approval.sign_again(session, self.verifier.key, new.key)
                api_keys = apikeys.attest_again(session, self.verifier.key, new.key)
                event = self.event(
                    ROTATION,
                    "keys",
                    previous=old.verifier.encode(),
                    verifier=new.verifier.encode(),
                    principals=principals,
                    api_keys=api_keys,
                    in_token=to_token,
                )
                (seq,) = self.ledger.append(session, [event])  # no checkpoint by one key
                note_rotation(session, seq)
                self.ledger.checkpoint(session, old, new)
        except BaseException:
            if isinstance(staged, TokenSigningKey):
                self.token.destroy_signing_key(staged)
            else:
                keystore.delete_secret(SIGNING_NEXT_SECRET)
            marker.unlink(missing_ok=True)
            raise
        self.config = set_options(
            self.root / CONFIG_NAME, "ledger", {"verifier_key": new.verifier.encode()}
        )
        marker.unlink()
        self.use_verifier(new.verifier)  # promotes a staged keystore key
        self._drop_superseded_workspace_keys()  # the old key
        self.advance_witness()
        return {
            "previous": old.verifier.encode(),
            "verifier": new.verifier.encode(),
            "principals": principals,
            "api_keys": api_keys,
            "in_token": to_token,
        }
