"""The Python API: ``Workspace.init`` / ``Workspace.open`` and everything a workspace does."""

from __future__ import annotations

from pathlib import Path

from ..access.principals import Actor
from ..clock import utc_now
from ..crypto.kdf import DEFAULT_PARAMS, Argon2idParams
from ..crypto.secret import Secret
from ..keys.pkcs11 import TokenSettings
from ..ledger import EventDraft
from ..store.s3 import S3Location
from .artifacts import ArtifactCheck, StoreReport
from .audit import AuditOperations
from .core import PassphraseSource
from .credentials import CredentialOperations
from .incidents import IncidentOperations
from .keyops import KeyOperations
from .registry import ModelVersion
from .totp import TotpEnrolment
from .users import UserOperations

__all__ = ["ArtifactCheck", "ModelVersion", "StoreReport", "TotpEnrolment", "Workspace"]


class Workspace(
    IncidentOperations, UserOperations, CredentialOperations, KeyOperations, AuditOperations
):
    """One sealml installation: config, metadata database, blob store and key provider.

    >>> ws = Workspace.open("/path/to/ws", passphrase=Secret("..."))
    >>> ws.login("alice", Secret("..."))
    >>> info = ws.put("train.csv", kind="dataset")
    >>> ws.get(info.id, "copy.csv")
    """

    @classmethod
    def init(
        cls,
        path: Path | str,
        *,
        passphrase: Secret,
        admin_password: Secret,
        admin_name: str = "admin",
        name: str = "sealml",
        kdf: Argon2idParams = DEFAULT_PARAMS,
        database_url: str | None = None,
        hsm: TokenSettings | None = None,
        hsm_pin: Secret | None = None,
        bucket: S3Location | None = None,
    ) -> Workspace:
        """Create a workspace at *path* with its first admin, who becomes the actor.

        The metadata database is a SQLite file in the workspace unless *database_url*
        names another (PostgreSQL: ``postgresql+psycopg://user@host/db``, an empty
        database, the password in ``~/.pgpass`` or ``PGPASSWORD``, never in the URL).
        Its key-encryption keys live in the keystore file unless *hsm* names a PKCS#11
        token (opened with *hsm_pin*) to generate and keep them in. Its sealed blobs are
        files in the workspace unless *bucket* names an S3-compatible bucket (and prefix,
        by default ``sealml/<workspace id>/``; it must hold nothing yet). Refuses to touch a
        folder or database that already holds a workspace; on any failure the partly
        created workspace is removed.
        """
        from ..access.principals import MIN_PASSWORD_LENGTH, check_name
        from ..errors import UsageError

        check_name(admin_name)
        if len(admin_password.reveal()) < MIN_PASSWORD_LENGTH:
            raise UsageError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        root = Path(path).expanduser().resolve()
        workspace = cls._setup(
            root,
            name=name,
            passphrase=passphrase,
            kdf=kdf,
            database=database_url,
            token=hsm,
            token_pin=hsm_pin,
            bucket=bucket,
        )
        try:
            with workspace.transaction() as session:
                principal, key = workspace.principals.create(
                    session,
                    name=admin_name,
                    kind="human",
                    roles=["admin"],
                    password=admin_password,
                    created_by=admin_name,
                    created_at=utc_now(),
                )
                workspace.append(
                    session,
                    [
                        EventDraft(
                            admin_name,
                            "workspace.init",
                            f"workspace:{workspace.config.workspace.id}",
                        ),
                        EventDraft(
                            admin_name,
                            "user.add",
                            f"principal:{admin_name}",
                            details={
                                "roles": ["admin"],
                                "kind": "human",
                                "key_fingerprint": principal.public_key.fingerprint(),
                            },
                        ),
                    ],
                )
        except BaseException:
            token = workspace._token
            workspace._token = None
            workspace.close()
            cls._abandon(root, workspace.db, token)
            raise
        workspace.actor = Actor(principal, key, "init")
        return workspace

    @classmethod
    def open(
        cls, path: Path | str | None = None, *, passphrase: PassphraseSource = None
    ) -> Workspace:
        """Open the workspace at *path* (else ``$SEALML_WORKSPACE``, else the current folder).

        The keystore is unlocked with *passphrase* only when a key is first needed. Call
        :meth:`login` (or :meth:`login_with_key`, :meth:`resume_session`) before acting.
        """
        return cls.load(path, passphrase)
