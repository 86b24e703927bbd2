"""``sealml doctor``: cheap checks of a workspace's health, each with what to do about it.

Every check only reads. What it looks at: that the workspace's files are private to their
owner, that the database schema is current, that every sealed artifact still has its blob
at the size its record says (without decrypting anything: ``sealml verify --all`` does
that), that the key provider (keystore or PKCS#11 token) holds every KEK a data key needs,
leftovers of interrupted writes, the ledger against its checkpoints and witness,
roles or rules proposed but not approved, signing keys older than the workspace allows,
API keys servers would refuse or that never expire and have grown old,
the development TLS certificate's expiry and
free disk space; on request, the installed packages' files against their RECORDs and
their versions against an offline copy of the OSV advisories.
"""

from __future__ import annotations

import shutil
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy import select

from .clock import parsed, utc_now
from .config import CONFIG_NAME
from .db.models import DataKeyRow
from .errors import AuthenticationError, SealmlError
from .keys.provider import MigratedProvider
from .provenance.advisories import AdvisoryDatabase
from .store.artifacts import live_artifacts, sealed_size
from .store.s3 import S3BlobStore
from .witness import state_home
from .workspace import Workspace

Status = Literal["ok", "warn", "fail"]

LOW_DISK_BYTES = 1 << 30
CERTIFICATE_WARNING = timedelta(days=14)
_SHOWN = 3  # offenders named in one finding


@dataclass(frozen=True)
class Finding:
    """The result of one check."""

    check: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def diagnose(
    workspace: Workspace,
    *,
    packages: bool = False,
    advisories: AdvisoryDatabase | None = None,
) -> list[Finding]:
    """Run every check against *workspace* (the ledger check needs ``audit:verify``);
    with *packages*, also hash every installed package's files against its RECORD; with
    *advisories* (an offline OSV copy), look the installed packages up in it."""
    checks = (
        _private_files,
        _schema,
        _blobs,
        _bucket,
        _keys,
        _partial_writes,
        _ledger,
        _policy,
        _key_ages,
        _workspace_key_age,
        _api_keys,
        _dev_certificate,
        _disk_space,
    )
    findings = [check(workspace) for check in checks]
    if packages:
        findings.append(_installed_packages())
    if advisories is not None:
        findings.append(_known_vulnerabilities(advisories))
    return findings


def _known_vulnerabilities(advisories: AdvisoryDatabase) -> Finding:
    from .provenance.environment import environment

    installed = dict(environment()["packages"])  # type: ignore[call-overload]
    found = advisories.findings(installed)
    if not found:
        return Finding(
            "known vulnerabilities",
            "ok",
            f"none of {len(installed)} installed packages is named by the "
            f"{advisories.records:,} advisories of {advisories.source}",
        )
    named = sorted({f"{f.package} {f.version} ({f.advisory})" for f in found})
    return Finding(
        "known vulnerabilities",
        "fail",
        f"{len(named)} advisories affect installed packages: {_named(named)}; upgrade them "
        "(`sealml model vulnerabilities` checks what a registered model was built with)",
    )


def _installed_packages() -> Finding:
    from .provenance.installed import verify_installed

    report = verify_installed()
    if report.ok:
        return Finding(
            "installed packages",
            "ok",
            f"{report.files:,} files of {report.distributions} distributions match the "
            "hashes recorded when they were installed",
        )
    problems = [f"{p} changed" for p in report.changed] + [f"{p} missing" for p in report.missing]
    return Finding(
        "installed packages",
        "fail",
        f"{len(problems)} file(s) differ from what was installed: {_named(problems)}; "
        "reinstall those packages from a trusted index and find out who changed them",
    )


def _named(paths: list[str]) -> str:
    shown = ", ".join(paths[:_SHOWN])
    return shown + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


def _private_files(workspace: Workspace) -> Finding:
    """Nobody but the owner can reach the workspace's files or the user's sealml state
    (session tickets, witness): a path is exposed when other users may open it and every
    folder above it, up to the workspace or state folder, lets them through."""
    root, state = workspace.root, state_home()
    trees = [
        (root, [root, root / CONFIG_NAME, root / ".sealml", *_inside(root / ".sealml")]),
        (state, [state, *_inside(state)]),
    ]
    exposed = [shown for top, paths in trees for shown in _exposed(top, paths)]
    checked = sum(len(paths) for _, paths in trees)
    if exposed:
        return Finding(
            "private files",
            "fail",
            f"other users can reach {_named(exposed)}; chmod go= them (folders 0700, files "
            "0600) and treat what they hold as exposed",
        )
    return Finding("private files", "ok", f"{checked} paths, reachable by the owner only")


def _inside(folder: Path) -> list[Path]:
    """Everything under *folder*, each folder before what it holds."""
    return sorted(folder.rglob("*")) if folder.is_dir() else []


def _exposed(top: Path, paths: list[Path]) -> list[str]:
    """Those of *paths* (*top* first, each folder before what it holds) other users can
    open. *top* itself may be listable, never writable: others could swap its files."""
    exposed: list[str] = []
    open_folders: set[Path] = set()
    for path in paths:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        reachable = path == top or path.parent in open_folders
        if stat.S_ISDIR(mode) and reachable and stat.S_IMODE(mode) & 0o011:
            open_folders.add(path)
        unsafe = 0o022 if path == top else 0o066
        if reachable and not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & unsafe:
            exposed.append(f"{path} ({stat.S_IMODE(mode):04o})")
    return exposed


def _schema(workspace: Workspace) -> Finding:
    current, head = workspace.db.current_revision(), workspace.db.head_revision()
    if current == head:
        return Finding("database schema", "ok", f"revision {current}")
    return Finding(
        "database schema",
        "fail",
        f"revision {current}, this sealml expects {head}: upgrade sealml or open the "
        "workspace with the version that made it",
    )


def _blobs(workspace: Workspace) -> Finding:
    """Every live artifact's blob is present at the exact sealed size."""
    try:
        workspace.authorize("artifact:verify", "artifact:*", action="artifact.verify")
    except SealmlError as error:
        return Finding("sealed blobs", "warn", f"not checked: {error}")
    broken: list[str] = []
    with workspace.db.read() as session:
        rows = live_artifacts(session)
    try:
        stored = dict(workspace.blobs.listing())
    except SealmlError as error:
        return Finding("sealed blobs", "fail", f"the blob store cannot be listed: {error}")
    for row in rows:
        size = stored.get(row.blob_name)
        if size is None:
            broken.append(f"{row.id[:12]} ({row.name}) is missing")
        elif size != sealed_size(row):
            broken.append(f"{row.id[:12]} ({row.name}) has the wrong size")
    checked = len(rows)
    if broken:
        return Finding(
            "sealed blobs",
            "fail",
            f"{len(broken)} of {checked}: {_named(broken)}; restore them from a backup of "
            "the blob store, or `sealml verify` them for details",
        )
    return Finding("sealed blobs", "ok", f"{checked} present at their sealed size")


def _keys(workspace: Workspace) -> Finding:
    """The key provider opens, and holds every KEK a stored data key was wrapped with."""
    try:
        provider = workspace.keys
        held = set(provider.kek_ids())
    except AuthenticationError as error:
        return Finding("key-encryption keys", "warn", f"not checked: {error}")
    except SealmlError as error:
        return Finding("key-encryption keys", "fail", str(error))
    with workspace.db.read() as session:
        used = set(session.execute(select(DataKeyRow.kek_id).distinct()).scalars())
    behind: list[str] = []
    if isinstance(provider, MigratedProvider):  # the keystore's KEKs still unwrap
        behind = sorted((used - held) & set(workspace.keystore.kek_ids()))
    missing = sorted(used - held - set(behind))
    if missing:
        return Finding(
            "key-encryption keys",
            "fail",
            f"data keys are wrapped under {_named(missing)}, which the {provider.name} "
            "provider no longer holds: those artifacts cannot be decrypted",
        )
    if behind:
        return Finding(
            "key-encryption keys",
            "warn",
            f"data keys are still wrapped under the keystore's {_named(behind)} (an "
            "interrupted `keys migrate`, or a process that sealed before it saw the "
            "migration): run `sealml keys migrate` again",
        )
    return Finding(
        "key-encryption keys",
        "ok",
        f"{provider.name} provider, current {provider.current_kek_id()}, "
        f"{len(held)} held, {len(used)} in use",
    )


def _bucket(workspace: Workspace) -> Finding:
    blobs = workspace.blobs
    if not isinstance(blobs, S3BlobStore):
        return Finding("blob bucket", "ok", "none: blobs are local files")
    try:
        versioned = blobs.versioned()
    except SealmlError as error:
        return Finding("blob bucket", "fail", str(error))
    if not versioned:
        return Finding(
            "blob bucket",
            "warn",
            f"{blobs.location.bucket} does not keep object versions: a blob deleted or "
            "overwritten there is lost until restored from a `sealml backup`; enable "
            "versioning",
        )
    return Finding("blob bucket", "ok", f"{blobs.location.bucket} is reachable and versioned")


def _partial_writes(workspace: Workspace) -> Finding:
    try:
        stale = workspace.blobs.stale_partials(86400)
    except SealmlError as error:
        return Finding("interrupted writes", "warn", f"not checked: {error}")
    if stale:
        return Finding(
            "interrupted writes",
            "warn",
            f"{stale} partial blob(s) older than a day in {workspace.blobs}; they hold "
            "ciphertext only and can be discarded",
        )
    return Finding("interrupted writes", "ok", "none older than a day")


def _ledger(workspace: Workspace) -> Finding:
    try:
        report = workspace.audit_verify()
    except SealmlError as error:
        return Finding("audit ledger", "warn", f"not checked: {error}")
    if not report.ok:
        return Finding(
            "audit ledger",
            "fail",
            f"{report.problems[0]}; investigate with `sealml audit verify` before trusting "
            "the workspace",
        )
    return Finding(
        "audit ledger",
        "ok",
        f"{report.events} events, {report.checkpoints} checkpoints, witness consistent",
    )


def _older(stamp: str, days: int) -> bool:
    """Whether the time sealml wrote as *stamp* is more than *days* ago."""
    return datetime.now(UTC) - parsed(stamp) > timedelta(days=days)


def _key_ages(workspace: Workspace) -> Finding:
    limit = workspace.config.access.max_key_age_days
    try:
        principals = workspace.users()
    except SealmlError as error:
        return Finding("signing key age", "warn", f"not checked: {error}")
    old = sorted(p.name for p in principals if not p.disabled and _older(p.key_since, limit))
    if old:
        return Finding(
            "signing key age",
            "warn",
            f"{len(old)} active principal(s) sign with a key older than {limit} days: "
            f"{_named(old)}; renew with `sealml user rotate-key`",
        )
    return Finding("signing key age", "ok", f"every active key is under {limit} days old")


def _workspace_key_age(workspace: Workspace) -> Finding:
    """The workspace key's age: since its last rotation, else since the workspace began."""
    limit = workspace.config.access.max_key_age_days
    try:
        since = workspace.workspace_key_since()
    except SealmlError as error:
        return Finding("workspace key age", "fail", str(error))
    if _older(since, limit):
        return Finding(
            "workspace key age",
            "warn",
            f"the workspace key (checkpoints, principal records, policy, API keys) is in use "
            f"since {since}, over {limit} days: renew it with `sealml keys "
            "rotate-workspace-key`",
        )
    try:
        left = len(workspace.superseded_workspace_keys())
    except SealmlError:
        left = 0  # the keystore or token is not open to this check
    if left:
        return Finding(
            "workspace key age",
            "warn",
            f"in use since {since}; an interrupted rotation left {left} copy(ies) of a "
            "superseded workspace key (never used): `sealml keys rotate-workspace-key` "
            "destroys them",
        )
    return Finding("workspace key age", "ok", f"in use since {since}")


def _api_keys(workspace: Workspace) -> Finding:
    try:
        keys = [k for k in workspace.api_keys() if k.revoked_at is None]
    except SealmlError as error:
        return Finding("API keys", "warn", f"not checked: {error}")
    now = utc_now()
    live = [k for k in keys if not (k.expires_at and k.expires_at <= now)]
    unverified = sorted(k.id for k in live if not k.verified)
    if unverified:
        return Finding(
            "API keys",
            "fail",
            f"{len(unverified)} key(s) without a valid workspace signature (edited in the "
            f"database, or issued before keys were signed): {_named(unverified)}; servers "
            "refuse them: revoke them and issue new ones",
        )
    limit = workspace.config.access.max_key_age_days
    stale = sorted(k.id for k in live if not k.expires_at and _older(k.created_at, limit))
    if stale:
        return Finding(
            "API keys",
            "warn",
            f"{len(stale)} key(s) without expiry older than {limit} days: {_named(stale)}; "
            "replace them with `sealml apikey rotate`",
        )
    return Finding("API keys", "ok", f"{len(live)} valid, all signed")


def _policy(workspace: Workspace) -> Finding:
    if workspace.policy_pending:
        return Finding(
            "policy",
            "warn",
            f"{CONFIG_NAME} proposes roles, registry rules, serving or monitoring settings that "
            "are not in force; an admin "
            "can review them with `sealml policy show` and run `sealml policy approve`",
        )
    return Finding("policy", "ok", "what is in force is what sealml.toml says")


def _dev_certificate(workspace: Workspace) -> Finding:
    from cryptography import x509

    path = workspace.root / ".sealml" / "serve-tls" / "server.pem"
    if not path.is_file():
        return Finding("serving certificate", "ok", "no development certificate")
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        return Finding("serving certificate", "fail", f"{path} is not a PEM certificate")
    left = certificate.not_valid_after_utc - datetime.now(UTC)
    if left < CERTIFICATE_WARNING:
        when = "expired" if left.total_seconds() < 0 else f"expires in {left.days} day(s)"
        return Finding(
            "serving certificate",
            "warn",
            f"the development certificate {when}; `sealml serve --dev-tls` makes a new one "
            "once it has expired (clients must trust the new CA)",
        )
    return Finding("serving certificate", "ok", f"valid for {left.days} more days")


def _disk_space(workspace: Workspace) -> Finding:
    free = shutil.disk_usage(_existing(workspace.root / ".sealml")).free
    if free < LOW_DISK_BYTES:
        return Finding(
            "disk space",
            "warn",
            f"{free / 2**20:.0f} MiB free; sealing and the ledger need room to write",
        )
    return Finding("disk space", "ok", f"{free / 2**30:.1f} GiB free")


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path
