"""The shared state of an open workspace: config, database, blob store, keys, actor, ledger."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

from sqlalchemy.orm import Session

from ..access import approval
from ..access.anchor import Anchor, anchored_digest
from ..access.approval import ApprovedPolicy
from ..access.policy import Policy
from ..access.principals import Actor, Principal, PrincipalStore
from ..clock import utc_now
from ..config import (
    CONFIG_NAME,
    STATE_DIR,
    BlobsSection,
    Config,
    DatabaseSection,
    KdfSection,
    LedgerSection,
    MonitorSection,
    ServeSection,
    WorkspaceSection,
    database_url,
    load_config,
    resolve,
    set_options,
)
from ..crypto.kdf import Argon2idParams
from ..crypto.secret import Secret
from ..crypto.signing import Signer, SigningKey
from ..db import Database
from ..db.engine import check_workspace_url
from ..db.meta import read_meta, write_meta
from ..errors import (
    AuthenticationError,
    ConfigError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    SealmlError,
    UsageError,
    WorkspaceExistsError,
)
from ..fsutil import create_private, read_private_file, replacement_stamp
from ..keys.local import KEK_PREFIX as LOCAL_KEK_PREFIX
from ..keys.local import LocalKeystore
from ..keys.pkcs11 import Pkcs11Provider, TokenEcdsaKey, TokenSettings
from ..keys.provider import KeyProvider, MigratedProvider
from ..ledger import Checkpoint, EventDraft, Ledger, NoteSigner, NoteVerifier, open_note
from ..ledger.checkpoint import unverified_checkpoint
from ..ledger.keyhistory import KeyHistory, recorded_handovers
from ..store.blobs import BlobStore, LocalBlobStore
from ..store.s3 import S3BlobStore, S3Location
from ..witness import Witness

HSM_PIN_ENV = "SEALML_HSM_PIN"
SIGNING_SECRET = "workspace-signing-key"  # noqa: S105 (a keystore entry name)
SIGNING_NEXT_SECRET = "workspace-signing-key-next"  # noqa: S105 (staged by a rotation)
ROTATION_MARKER = "workspace-key-rotation"  # names the key a rotation under way moves to
PSEUDONYM_SECRET = "pii-pseudonym-key"  # noqa: S105
TOKEN_SECRET = "pii-token-key"  # noqa: S105
WATERMARK_SECRET = "watermark-key"  # noqa: S105
WORKSPACE_ENV = "SEALML_WORKSPACE"
PassphraseSource = Secret | Callable[[], Secret] | None


def blob_store(root: Path, section: BlobsSection) -> BlobStore:
    """The blob backend ``sealml.toml`` names: a local folder or an S3-compatible bucket."""
    if section.backend == "s3":
        return S3BlobStore(section.s3_location())
    return LocalBlobStore(resolve(root, section.path))


def find_root(path: Path | str | None) -> Path:
    """The workspace folder: *path*, else ``$SEALML_WORKSPACE``, else the current folder."""
    if path is None:
        path = os.environ.get(WORKSPACE_ENV) or Path.cwd()
    return Path(path).expanduser().resolve()


class WorkspaceCore:
    """State and helpers every group of workspace operations uses."""

    def __init__(
        self, root: Path, config: Config, passphrase: PassphraseSource, *, create: bool = False
    ) -> None:
        self.root = root
        self.config = config
        self.db = Database(database_url(root, config.database.url), create=create)
        self.blobs = blob_store(root, config.blobs)
        self.approved: ApprovedPolicy | None = None
        self.ledger = Ledger(config.ledger.origin, self._checkpoint_extensions)
        self.verifier = _decoded_verifier(config.ledger.verifier_key)
        # checkpoint notes this process verified, opened
        self._opened_notes: dict[str, Checkpoint] = {}
        self.anchor = Anchor(self._anchored_state)
        self.principals = PrincipalStore(
            self.verifier.key, self._workspace_signing_key, self.kdf_params, self.anchor
        )
        self.witness = Witness(config.workspace.id, self._trusted_checkpoint)
        self._config_stamp = replacement_stamp(root / CONFIG_NAME)
        # A process sealing for another (see sealml.workspace.runs) advances the witness
        # after answering, not before.
        self.witness_deferred = False
        self._witness_due = False
        self._passphrase = passphrase
        self._keystore: LocalKeystore | None = None
        self._token: Pkcs11Provider | None = None
        self._token_pin: Secret | None = None
        self._note_signer: NoteSigner | None = None
        self.actor: Actor | None = None
        # (ledger size already read, key id -> time) of API key revocations (apikeys.py)
        self._revocations: tuple[int, dict[str, str]] = (0, {})

    def __repr__(self) -> str:
        return f"Workspace({self.root})"

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    def _create_files(
        cls,
        root: Path,
        *,
        name: str,
        passphrase: Secret,
        kdf: Argon2idParams,
        database: str | None,
        token: TokenSettings | None,
        bucket: S3Location | None,
        workspace_id: str,
        signing: Signer | None,
    ) -> tuple[Config, LocalKeystore, NoteSigner]:
        """The configuration, keystore and blob store of a new workspace. Its signing key is
        *signing* (in a token) or, when None, a new one kept in the keystore."""
        state = root / STATE_DIR
        keystore = LocalKeystore.create(state / "keystore.json", workspace_id, passphrase, kdf)
        if signing is None:
            generated = SigningKey.generate("ed25519")
            keystore.store_secret(SIGNING_SECRET, generated.pkcs8_der())
            signing = generated
        origin = f"sealml/{workspace_id}"
        signer = NoteSigner(origin, signing)
        config = Config(
            workspace=WorkspaceSection(id=workspace_id, name=name, created_at=utc_now()),
            ledger=LedgerSection(origin=origin, verifier_key=signer.verifier.encode()),
        )
        config.keys.kdf = KdfSection(**kdf.to_dict())
        if database is not None:
            config.database = DatabaseSection(url=database)
        if token is not None:
            config.keys.provider = "pkcs11"
            config.keys.hsm_module, config.keys.hsm_token = token.module, token.token
        if bucket is None:
            LocalBlobStore.initialise(resolve(root, config.blobs.path))
        else:
            # Each workspace gets a prefix of its own unless told otherwise.
            prefix = bucket.prefix or f"sealml/{workspace_id}/"
            location = dataclasses.replace(bucket, prefix=prefix)
            S3BlobStore.initialise(location)
            config.blobs = BlobsSection.in_bucket(location)
        create_private(root / CONFIG_NAME, config.dump())
        return config, keystore, signer

    @classmethod
    def _claim(cls, root: Path) -> None:
        """Create the state folder, failing if any part of a workspace is already there."""
        if (root / CONFIG_NAME).exists() or (root / STATE_DIR).exists():
            raise WorkspaceExistsError(
                f"a workspace already exists at {root}; refusing to overwrite"
            )
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            (root / STATE_DIR).mkdir(mode=0o700)
        except FileExistsError:
            raise WorkspaceExistsError(
                f"a workspace already exists at {root}; refusing to overwrite"
            ) from None

    @classmethod
    def _abandon(
        cls, root: Path, database: Database | None = None, token: Pkcs11Provider | None = None
    ) -> None:
        """Remove a partly created workspace: its files, in *database* (found empty by
        ``_setup``) the tables it created, and in *token* the KEKs it generated."""
        if token is not None:
            with contextlib.suppress(Exception):
                token.discard()
        if database is not None:
            with contextlib.suppress(SealmlError):
                database.drop_schema()
            database.dispose()
        with contextlib.suppress(OSError):
            shutil.rmtree(root / STATE_DIR)
        with contextlib.suppress(OSError):
            (root / CONFIG_NAME).unlink()

    @classmethod
    def _setup(
        cls,
        root: Path,
        *,
        name: str,
        passphrase: Secret,
        kdf: Argon2idParams,
        database: str | None = None,
        token: TokenSettings | None = None,
        token_pin: Secret | None = None,
        bucket: S3Location | None = None,
    ) -> Self:
        """Create the files and the database schema. A server database must be empty: a
        workspace never takes over tables it did not create, and on failure drops only
        those it created. With *token*, the first KEK and the workspace's signing key are
        generated in that PKCS#11 token (and deleted again if the workspace cannot be
        created)."""
        if database is not None:
            check_workspace_url(database)
        cls._claim(root)
        created: Database | None = None
        made_token: Pkcs11Provider | None = None
        workspace_id = uuid.uuid4().hex
        try:
            signing: Signer | None = None
            if token is not None:
                if token_pin is None:
                    raise UsageError("a PKCS#11 token needs its PIN")
                made_token = Pkcs11Provider.initialise(token, token_pin, workspace_id)
                signing = made_token.create_signing_key()
            config, keystore, signer = cls._create_files(
                root,
                name=name,
                passphrase=passphrase,
                kdf=kdf,
                database=database,
                token=token,
                bucket=bucket,
                workspace_id=workspace_id,
                signing=signing,
            )
            workspace = cls(root, config, passphrase, create=True)
            workspace._keystore, workspace._note_signer = keystore, signer
            workspace._token = made_token
            workspace._token_pin = token_pin if made_token is not None else None
            if workspace.db.table_names():
                workspace.close()
                raise WorkspaceExistsError(
                    f"database {workspace.db.safe_url} is not empty; "
                    "a workspace needs a database of its own"
                )
            created = workspace.db
            workspace.db.upgrade()
            with workspace.db.write() as session:
                write_meta(session, "workspace_id", config.workspace.id)
                Ledger.initialise(session)
                workspace.approved = approval.approve(
                    session,
                    config,
                    approved_by="init",
                    approved_at=utc_now(),
                    signer=signer.key,
                )
        except BaseException:
            cls._abandon(root, created, made_token)
            raise
        return workspace

    @classmethod
    def load(cls, path: Path | str | None, passphrase: PassphraseSource) -> Self:
        root = find_root(path)
        workspace = cls(root, load_config(root / CONFIG_NAME), passphrase)
        revision = workspace.db.current_revision()
        if revision is None:
            raise ConfigError(
                f"the workspace database at {workspace.db.safe_url} is not initialised"
            )
        if revision != workspace.db.head_revision():
            workspace.db.upgrade()
        workspace._finish_key_rotation()
        with workspace.db.read() as session:
            if read_meta(session, "workspace_id") != workspace.config.workspace.id:
                raise IntegrityError("the database belongs to another workspace than sealml.toml")
            workspace.approved = workspace._approved_policy(session)
        return workspace

    def reload_policy(self) -> None:
        """Read the approved policy again (long-running processes: an admin may approve a
        new one, or rotate the workspace key, while they run); an altered or missing one
        raises IntegrityError."""
        self._follow_key_rotation()
        with self.db.read() as session:
            self.approved = self._approved_policy(session)

    def _approved_policy(self, session: Session) -> ApprovedPolicy:
        """The approved policy, its signature and its anchoring checked."""
        approved = approval.load(session, self.verifier.key)
        self.anchor.check_policy(session, approved.digest)
        return approved

    # -- the workspace key over time ------------------------------------------------------

    def key_history(self) -> KeyHistory:
        """Which key signed the checkpoints when (IntegrityError when the ledger's record of
        rotations does not lead to the verifier key in sealml.toml)."""
        with self.db.read() as session:
            return KeyHistory.read(session, self.verifier)

    def open_checkpoint(self, note: str) -> Checkpoint:
        """A checkpoint note of this workspace, signed by the key in force at its size."""
        try:
            return open_note(note, self.verifier)
        except IntegrityError:  # perhaps from before a rotation of the workspace key
            return self.key_history().open(note)

    def _trusted_checkpoint(self, note: str) -> Checkpoint:
        """*note* opened, its signature checked once per process (the ledger's latest
        checkpoint and the witness are read on every principal read and every append)."""
        checkpoint = self._opened_notes.get(note)
        if checkpoint is None and note == self.ledger.last_signed:
            checkpoint = unverified_checkpoint(note)  # this process signed it
        if checkpoint is None:
            try:
                checkpoint = self.open_checkpoint(note)
            except IntegrityError:
                with contextlib.suppress(ConfigError):
                    self._follow_key_rotation()  # another process may have rotated the key
                checkpoint = self.open_checkpoint(note)
            if len(self._opened_notes) >= 8:
                self._opened_notes.clear()
            self._opened_notes[note] = checkpoint
        return checkpoint

    def _newest_checkpoint(self, session: Session) -> Checkpoint | None:
        """The newest checkpoint this process can trust: the newest stored one that
        verifies, or the local witness's when that is newer (the stored ones after it were
        deleted or forged, or the database is an older copy: ``audit verify`` says which)."""
        newest: Checkpoint | None = None
        latest = Ledger.latest_note(session)
        if latest is not None:
            try:
                newest = self._trusted_checkpoint(latest)
            except (IntegrityError, UsageError):
                for note in Ledger.checkpoint_notes(session, newest_first=True):
                    with contextlib.suppress(IntegrityError, UsageError):
                        newest = self._trusted_checkpoint(note)
                        break
        witnessed = self.witness.load()
        if (
            witnessed is not None
            and (newest is None or witnessed.size > newest.size)
            # a read that started before another process committed (SQLite reads a
            # snapshot) has not got that far; a database copied back whole is for
            # `audit verify` to find
            and witnessed.size <= Ledger.size(session)
        ):
            newest = witnessed
        return newest

    def _anchored_state(self, session: Session) -> bytes | None:
        """The attested state digest the newest trusted checkpoint anchors."""
        newest = self._newest_checkpoint(session)
        return None if newest is None else anchored_digest(newest)

    def _checkpoint_extensions(self, session: Session) -> list[str]:
        """The extension lines of a checkpoint this process is about to sign."""
        return [self.anchor.line(session)]

    def use_verifier(self, verifier: NoteVerifier) -> None:
        """Check and sign with *verifier*'s key from now on (its rotation committed)."""
        signer = None
        if self._keystore is not None:
            self._keystore.reload()  # the process that rotated changed its secrets
            key = self._signing_key_in(self._keystore, verifier)
            signer = NoteSigner(self.config.ledger.origin, key)
        self.verifier = verifier
        self.principals.use_verifier(verifier.key)
        if signer is not None:
            self._note_signer = signer

    def _follow_key_rotation(self) -> None:
        """Take up a workspace key rotation another process made since this one opened:
        sealml.toml names a new verifier key, accepted only when the ledger records the
        handover from the key this process trusts."""
        stamp = replacement_stamp(self.root / CONFIG_NAME)
        if stamp == self._config_stamp:
            return
        configured = load_config(self.root / CONFIG_NAME)
        self._config_stamp = stamp
        if configured.ledger.verifier_key == self.config.ledger.verifier_key:
            return
        new = _decoded_verifier(configured.ledger.verifier_key)
        with self.db.read() as session:
            history = KeyHistory.read(session, new)
            if not history.handovers:
                raise IntegrityError(
                    f"{CONFIG_NAME}: ledger.verifier_key changed, but the ledger records no "
                    "rotation to it"
                )
            history.check_handovers(session, self.verifier)
        self.config.ledger.verifier_key = configured.ledger.verifier_key
        self.use_verifier(new)

    def _finish_key_rotation(self) -> None:
        """Complete a workspace key rotation interrupted between its commit and the update
        of sealml.toml, or forget one that never committed (see KeyOperations)."""
        marker = self.root / STATE_DIR / ROTATION_MARKER
        try:
            staged = _decoded_verifier(marker.read_text(encoding="ascii"))
        except FileNotFoundError:
            return
        except (UnicodeDecodeError, ConfigError):
            staged = None
        with self.db.read() as session:
            handovers = recorded_handovers(session)
            last = handovers[-1] if handovers else None
            committed = (
                staged is not None
                and last is not None
                and last.verifier == staged
                and last.previous == self.verifier
            )
            if committed:
                assert last is not None
                KeyHistory(last.verifier, (last,)).check_handovers(session, self.verifier)
        if committed:
            assert last is not None
            self.config = set_options(
                self.root / CONFIG_NAME, "ledger", {"verifier_key": last.verifier.encode()}
            )
            self._config_stamp = replacement_stamp(self.root / CONFIG_NAME)
            self.use_verifier(last.verifier)
        marker.unlink(missing_ok=True)

    def refresh_actor(self) -> Actor:
        """The acting principal and the approved policy as they stand now, for a process
        that runs for long (a server): changed roles apply; a principal disabled, or given
        a new signing key, since it logged in raises AuthenticationError."""
        actor = self.require_actor()
        self.reload_policy()
        with self.db.read() as session:
            principal = self.principals.get(session, actor.name)
        if principal.disabled:
            raise AuthenticationError(f"{actor.name} was disabled")
        if principal.public_key != actor.signing_key.public_key:
            raise AuthenticationError(f"{actor.name} has a new signing key; start again with it")
        self.actor = self.principals.act_with_key(principal, actor.signing_key, actor.via)
        return self.actor

    @property
    def in_force(self) -> ApprovedPolicy:
        """The approved policy: roles, registry rules, serving and monitoring settings (never
        sealml.toml's unapproved proposal)."""
        if self.approved is None:
            raise IntegrityError("the workspace has no approved policy")
        return self.approved

    @property
    def policy(self) -> Policy:
        """The role policy in force."""
        return self.in_force.policy

    @property
    def policy_pending(self) -> bool:
        """True when sealml.toml proposes roles, registry rules, serving or monitoring
        settings other than those approved."""
        return self.approved is not None and self.approved.differs_from(self.config)

    @property
    def serve_settings(self) -> ServeSection:
        """The model server's settings in force."""
        return self.in_force.serve

    @property
    def monitor_settings(self) -> MonitorSection:
        """Monitoring's settings in force: alert rules, their actions, where alerts go."""
        return self.in_force.monitor

    def sibling(self) -> Self:
        """Another object for this workspace, for a thread of its own: same files and
        database, its own connections, unlocked with the keys this one holds (no KDF)
        and acting as nobody."""
        other = type(self).load(self.root, self._passphrase)
        try:
            if self._token_pin is not None:  # first: unlocking may need the token's key
                other.use_token_pin(self._token_pin)
            if self._keystore is not None:
                other.unlock_with_key(self._keystore.session_key)
        except BaseException:
            other.close()
            raise
        return other

    def close(self) -> None:
        self.db.dispose()
        if self._token is not None:
            self._token.close()
            self._token = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- keys -----------------------------------------------------------------------------

    @property
    def kdf_params(self) -> Argon2idParams:
        try:
            return Argon2idParams.from_dict(self.config.keys.kdf.model_dump())
        except ValueError as error:
            raise ConfigError(f"{CONFIG_NAME}: keys.kdf: {error}") from None

    def _passphrase_value(self) -> Secret:
        source = self._passphrase
        if isinstance(source, Secret):
            return source
        if source is not None:
            return source()
        raise AuthenticationError(
            "the keystore passphrase is needed: set SEALML_PASSPHRASE or keys.passphrase_file"
        )

    @property
    def keys(self) -> KeyProvider:
        """The key provider, unlocked on first use. A token's takes over from the keystore
        after ``keys migrate``: data keys still under the keystore's KEKs unwrap there."""
        if self.config.keys.provider == "local":
            return self.keystore
        return MigratedProvider(self.token, lambda: self.keystore, LOCAL_KEK_PREFIX)

    @property
    def token(self) -> Pkcs11Provider:
        """The PKCS#11 token of a workspace whose keys live in one, opened on first use."""
        if self._token is None:
            pin = self._token_pin or self._hsm_pin()
            self._token = Pkcs11Provider(self.token_settings(), pin, self.config.workspace.id)
            self._token_pin = pin
        return self._token

    def opened_token(self) -> Pkcs11Provider:
        """The token, for keys kept in it (UsageError when the workspace has none)."""
        if self.config.keys.provider != "pkcs11":
            raise UsageError(
                "the workspace keeps no keys in a PKCS#11 token (`sealml keys migrate` first)"
            )
        return self.token

    def token_key_of(self, principal: Principal) -> TokenEcdsaKey | None:
        """The principal's current key if the token holds it, else None."""
        if self.config.keys.provider != "pkcs11":
            return None
        for key in self.token.principal_keys(principal.id):
            if key.public_key == principal.public_key:
                return key
        return None

    @property
    def token_pin(self) -> Secret | None:
        """The PIN the PKCS#11 token was opened with (None until it is)."""
        return self._token_pin

    def use_token_pin(self, pin: Secret) -> None:
        """Open the token with *pin* rather than one from the environment (a sealing
        process gets its parent's)."""
        self._token_pin = pin

    def token_settings(self) -> TokenSettings:
        keys = self.config.keys
        if not keys.hsm_module or not keys.hsm_token:
            raise ConfigError(f"{CONFIG_NAME}: keys.provider pkcs11 needs hsm_module and hsm_token")
        return TokenSettings(keys.hsm_module, keys.hsm_token)

    def _hsm_pin(self) -> Secret:
        value = os.environ.get(HSM_PIN_ENV)
        if value:
            return Secret(value)
        if self.config.keys.hsm_pin_file:
            path = resolve(self.root, self.config.keys.hsm_pin_file)
            return Secret(read_private_file(path, "HSM PIN file").rstrip(b"\r\n"))
        raise AuthenticationError(f"the HSM PIN is needed: set {HSM_PIN_ENV} or keys.hsm_pin_file")

    @property
    def keystore(self) -> LocalKeystore:
        if self._keystore is None:
            path = resolve(self.root, self.config.keys.keystore)
            self._adopt_keystore(LocalKeystore.open(path, self._passphrase_value()))
        assert self._keystore is not None
        return self._keystore

    def unlock_with_key(self, master: bytes) -> None:
        """Unlock the keystore with the passphrase-derived key a login session kept."""
        path = resolve(self.root, self.config.keys.keystore)
        self._adopt_keystore(LocalKeystore.open_with_key(path, master))

    def _adopt_keystore(self, keystore: LocalKeystore) -> None:
        signer = NoteSigner(self.config.ledger.origin, self._signing_key_in(keystore))
        if signer.verifier.encode() != self.verifier.encode():
            raise IntegrityError(
                f"{CONFIG_NAME}: ledger.verifier_key does not match the keystore's signing key"
            )
        self._keystore, self._note_signer = keystore, signer

    def _signing_key_in(
        self, keystore: LocalKeystore, verifier: NoteVerifier | None = None
    ) -> Signer:
        """The workspace's signing key, the one *verifier* (by default sealml.toml's
        verifier key) names: in the keystore, staged there by a rotation whose commit
        sealml.toml took up (then it becomes the keystore's own), or in the token."""
        wanted = (verifier or self.verifier).key
        for name in (SIGNING_SECRET, SIGNING_NEXT_SECRET):
            try:
                key = SigningKey.from_pkcs8(keystore.load_secret(name))
            except NotFoundError:
                continue
            if key.public_key == wanted:
                if name == SIGNING_NEXT_SECRET:
                    keystore.store_secret(SIGNING_SECRET, key.pkcs8_der())
                    keystore.delete_secret(SIGNING_NEXT_SECRET)
                return key
        if self.config.keys.provider == "pkcs11":
            for in_token in self.token.signing_keys():
                if in_token.public_key == wanted:
                    return in_token
        raise IntegrityError(
            f"{CONFIG_NAME}: ledger.verifier_key does not match the workspace's signing key "
            "(in the keystore or the token)"
        )

    def _workspace_signing_key(self) -> Signer:
        return self.note_signer.key

    def pii_keys(self) -> tuple[bytes, bytes]:
        """The workspace's keys for pseudonyms and tokens (created on first use)."""
        return self.named_secret(PSEUDONYM_SECRET), self.named_secret(TOKEN_SECRET)

    def named_secret(self, name: str) -> bytes:
        """A 32-byte workspace secret kept in the key provider, created on first use."""
        keystore = self.keystore
        try:
            return keystore.load_secret(name)
        except NotFoundError:
            keystore.store_secret(name, os.urandom(32))
            return keystore.load_secret(name)

    @property
    def note_signer(self) -> NoteSigner:
        """The checkpoint signing key (unlocks the keystore)."""
        _ = self.keystore
        assert self._note_signer is not None
        return self._note_signer

    @property
    def unlocked(self) -> bool:
        return self._keystore is not None

    # -- actors and authorisation ---------------------------------------------------------

    def require_actor(self) -> Actor:
        if self.actor is None:
            raise AuthenticationError(
                "no principal: run `sealml login`, or set SEALML_USER with SEALML_PASSWORD "
                "or SEALML_KEY_FILE"
            )
        return self.actor

    def authorize(self, permission: str, resource: str, action: str | None = None) -> Actor:
        """The one access decision: may the acting principal use *permission* on *resource*?

        A denial is written to the ledger (in its own transaction, so it survives the
        refused operation) and raised as PermissionDeniedError.
        """
        actor = self.require_actor()
        if self.policy.allows(actor.principal.roles, permission):
            return actor
        reset_by = actor.principal.password_reset_by  # such an actor holds no role
        self.record(
            [
                EventDraft(
                    principal=actor.name,
                    action=action or permission,
                    resource=resource,
                    outcome="denied",
                    details={
                        "permission": permission,
                        **({"password_reset_by": reset_by} if reset_by else {}),
                    },
                )
            ]
        )
        if reset_by is not None:
            raise PermissionDeniedError(
                f"{reset_by} reset the password of {actor.name}: change it first with "
                "`sealml user passwd`"
            )
        raise PermissionDeniedError(
            f"permission denied: {actor.name} lacks {permission} on {resource}"
        )

    # -- ledger ---------------------------------------------------------------------------

    def append(self, session: Session, drafts: Sequence[EventDraft]) -> list[int]:
        """Append events inside *session*, with a signed checkpoint when the keystore is open."""
        signer = self._note_signer if self.unlocked else None
        return self.ledger.append(session, drafts, signer)

    def record(self, drafts: Sequence[EventDraft]) -> list[int]:
        """Append events in a transaction of their own."""
        with self.db.write() as session:
            seqs = self.append(session, drafts)
        self.advance_witness()
        return seqs

    def advance_witness(self) -> None:
        """Record the latest checkpoint in the local witness (later, when
        :attr:`witness_deferred`: see :meth:`advance_deferred_witness`)."""
        if self.witness_deferred:
            self._witness_due = True
        else:
            self._record_witness()

    def advance_deferred_witness(self) -> None:
        """Do the advance :meth:`advance_witness` put off, if any."""
        if self._witness_due:
            self._witness_due = False
            self._record_witness()

    def _record_witness(self) -> None:
        with self.db.read() as session:
            latest = Ledger.latest_note(session)
        if latest is None:
            return
        try:
            # Take up a rotation made elsewhere now: the handover note opens under the old
            # key too, so opening it would not make this process follow.
            self._follow_key_rotation()
            self.witness.advance(latest)
        except (IntegrityError, ConfigError):
            pass  # not witnessed; `audit verify` says what is wrong

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction after which the local witness is advanced."""
        with self.db.write() as session:
            yield session
        self.advance_witness()

    def event(self, action: str, resource: str, outcome: str = "ok", **details: Any) -> EventDraft:
        actor = self.actor.name if self.actor is not None else "-"
        return EventDraft(actor, action, resource, outcome, details)


def _decoded_verifier(text: str) -> NoteVerifier:
    try:
        return NoteVerifier.decode(text)
    except UsageError:
        raise ConfigError(f"{CONFIG_NAME}: ledger.verifier_key is malformed") from None
