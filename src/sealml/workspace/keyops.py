"""Key-encryption key operations: rotation, and moving the KEKs into a PKCS#11 token.

Both re-wrap data keys only (sealed bodies are never touched) while holding the ledger, so
a process that keeps the workspace open and seals meanwhile wraps again under the new KEK
before it commits (see :meth:`SealedArtifact.wrap_under_current`).
"""

from __future__ import annotations

from typing import Any

from ..config import CONFIG_NAME, set_options
from ..crypto.secret import Secret
from ..errors import UsageError
from ..keys.pkcs11 import Pkcs11Provider, TokenSettings
from ..keys.provider import rewrap_all
from ..store.datakeys import DatabaseDataKeys
from .core import WorkspaceCore


class KeyOperations(WorkspaceCore):
    """``sealml keys rotate | migrate``."""

    def rotate_keys(self) -> dict[str, Any]:
        """Make a new KEK current, re-wrap every data key under it, destroy the old KEKs."""
        self.authorize("keys:admin", "keys", action="keys.rotate")
        provider = self.keys
        old = provider.kek_ids()
        new = provider.rotate()
        with self.transaction() as session:
            self.ledger.hold(session)
            count = rewrap_all(provider, DatabaseDataKeys(session))
            self.append(
                session,
                [self.event("keys.rotate", "keys", kek=new, rewrapped=count, destroyed=old)],
            )
        provider.destroy(old)
        self.db.truncate_journal()
        return {"kek": new, "rewrapped": count, "destroyed": old}

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
        with self.transaction() as session:
            self.ledger.hold(session)
            count = rewrap_all(self.keys, DatabaseDataKeys(session))
            event = self.event(
                "keys.migrate",
                "keys",
                provider="pkcs11",
                token=settings.token,
                kek=token.current_kek_id(),
                rewrapped=count,
                destroyed=old,
            )
            self.append(session, [event])
        keystore.destroy(old)
        self.db.truncate_journal()
        return {
            "token": settings.token,
            "kek": token.current_kek_id(),
            "rewrapped": count,
            "destroyed": old,
        }
