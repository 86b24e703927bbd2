"""``sealml demo --walkthrough``: a guided walk through sealing, tampering and proofs.

It creates a throwaway workspace, seals a real dataset, lets a second principal read it and
be refused what its role does not allow, flips real bytes on disk (in a sealed blob and in
the ledger) and shows each tamper caught, proves the ledger with offline proofs, rotates the
keys (KEK and workspace key) and crypto-shreds an artifact. It exits 1 if any protection
failed to hold.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from ..crypto.secret import Secret
from ..errors import IntegrityError, PermissionDeniedError, SealmlError, ShreddedError
from ..ledger import EventFilter
from ..ledger.proofs import check_consistency, check_inclusion
from ..store.blobs import LocalBlobStore
from ..workspace import Workspace
from .credentials import write_credentials

DATA_ENV = "SEALML_DATA"
DEFAULT_DATASET = "adult_train.csv.gz"
SECOND_DATASET = "german_credit.csv"


def find_data_dir() -> Path | None:
    """``$SEALML_DATA``, else ``../shared/data`` from the current folder or the checkout."""
    candidates = []
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]))
    candidates.append(Path.cwd().parent / "shared" / "data")
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    for candidate in candidates:
        if (candidate / DEFAULT_DATASET).is_file():
            return candidate
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Demo:
    def __init__(self, root: Path, data: Path, console: Console, kept: bool) -> None:
        self.root = root
        self.kept = kept  # the workspace outlives the walkthrough: keep its secrets
        self.data = data
        self.console = console
        self.failures: list[str] = []
        self.step_number = 0

    def step(self, title: str) -> None:
        self.step_number += 1
        self.console.rule(f"[bold]{self.step_number}. {title}")

    def say(self, text: str) -> None:
        self.console.print(text)

    def expect(self, what: str, condition: bool) -> None:
        mark = "[green]✔[/green]" if condition else "[red]✘[/red]"
        self.console.print(f"  {mark} {what}")
        if not condition:
            self.failures.append(what)

    def expect_refusal(
        self, what: str, action: Callable[[], object], error: type[SealmlError]
    ) -> None:
        try:
            action()
        except error as caught:
            self.expect(f"{what}: [dim]{escape(str(caught))}[/dim]", True)
            return
        self.expect(f"{what} (it was NOT refused)", False)


def _flip_byte(path: Path, offset: int) -> int:
    with path.open("r+b") as handle:
        handle.seek(offset)
        original = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([original ^ 0x01]))
    return original


def _restore_byte(path: Path, offset: int, original: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(bytes([original]))


def run_walkthrough(keep: Path | None = None, data: Path | None = None) -> None:
    """Run the demo; raises IntegrityError (exit 1) if any protection did not hold."""
    console = Console(highlight=False)
    data_dir = data.parent if data is not None and data.is_file() else data or find_data_dir()
    dataset = data if data is not None and data.is_file() else None
    if dataset is None:
        if data_dir is None or not (data_dir / DEFAULT_DATASET).is_file():
            raise SealmlError(
                f"no dataset found: pass --data FILE or set {DATA_ENV} to ../shared/data"
            )
        dataset = data_dir / DEFAULT_DATASET
    temporary = keep is None
    base = Path(tempfile.mkdtemp(prefix="sealml-demo-")) if keep is None else keep
    try:
        demo = _Demo(base / "workspace", dataset, console, kept=not temporary)
        _walk(demo, data_dir)
    finally:
        if temporary:
            shutil.rmtree(base, ignore_errors=True)
    if demo.failures:
        raise IntegrityError(f"{len(demo.failures)} protection(s) did not hold")
    console.print(
        Panel("[bold green]Every tamper was caught and every proof checked.[/bold green]")
    )


def _walk(demo: _Demo, data_dir: Path | None) -> None:
    console = demo.console
    passphrase = Secret(secrets.token_urlsafe(24))
    admin_password = Secret(secrets.token_urlsafe(18))
    dana_password = Secret(secrets.token_urlsafe(18))

    demo.step("Create a workspace")
    ws = Workspace.init(demo.root, passphrase=passphrase, admin_password=admin_password)
    demo.say(f"workspace {escape(str(demo.root))} (id {ws.config.workspace.id})")
    demo.say("keystore sealed by an Argon2id-derived key; files 0600, folders 0700")
    ws.add_user("dana", ["data-scientist"], password=dana_password)
    demo.say("added dana (data-scientist)")
    if demo.kept:
        passwords = {"admin": admin_password, "dana": dana_password}
        kept = write_credentials(demo.root, passphrase, passwords)
        demo.say(f"generated secrets written to {escape(str(kept))} (0600, demo only)")

    demo.step(f"Seal a real dataset: {demo.data.name}")
    info = ws.put(demo.data, "dataset")
    demo.say(
        f"sealed {info.size:,} bytes as artifact {info.id}\n"
        f"  digest {info.digest}\n  signed by {info.creator} (ECDSA P-256), "
        "encrypted with its own data key (AES-256-GCM-HKDF streaming)"
    )
    assert isinstance(ws.blobs, LocalBlobStore)
    blob = ws.blobs.path_of(_blob_name(ws, info.id))
    demo.expect("the blob name reveals nothing about the content", info.digest[7:] not in blob.name)
    ws.close()

    demo.step("Another principal reads it; its role limits what it may do")
    ws = Workspace.open(demo.root, passphrase=passphrase)
    ws.login("dana", dana_password)
    copy = demo.root.parent / "adult-copy.bin"
    ws.get(info.id, copy)
    demo.expect(
        "dana's copy is byte-identical to the original", _sha256(copy) == _sha256(demo.data)
    )
    demo.expect_refusal("dana may not shred data", lambda: ws.shred(info.id), PermissionDeniedError)
    demo.expect_refusal(
        "dana may not add users",
        lambda: ws.add_user("mallory", ["admin"], password=Secret("x" * 12)),
        PermissionDeniedError,
    )
    note = ws.put(io.BytesIO(b"dana's notes on the data\n"), "report", "dana-notes.txt")
    old_key = ws.require_actor().principal.public_key
    _, rotated, _ = ws.rotate_signing_key(password=dana_password)
    demo.say(
        f"dana suspects her key leaked and rotates it: {old_key.fingerprint()[:16]} is "
        f"retired, {rotated.public_key.fingerprint()[:16]} signs from now on"
    )
    demo.expect(
        "what she signed before still verifies, with the retired key",
        ws.verify(note.id).creator == "dana" and rotated.retired_keys == (old_key,),
    )
    ws.close()

    ws = Workspace.open(demo.root, passphrase=passphrase)
    ws.login("admin", admin_password)
    demo.step("Tamper with the sealed blob on disk")
    size = blob.stat().st_size
    offset = size // 2
    original = _flip_byte(blob, offset)
    demo.say(f"flipped one bit at byte {offset:,} of {size:,} in {blob.name}")
    demo.expect_refusal(
        "unsealing refuses it", lambda: ws.get(info.id, copy, overwrite=True), IntegrityError
    )
    demo.expect("no partial output was left behind", _sha256(copy) == _sha256(demo.data))
    report = ws.verify_store()
    demo.expect("`verify --all` reports the damaged artifact", not report.ok)
    _restore_byte(blob, offset, original)
    demo.expect("after restoring the byte it verifies again", ws.verify(info.id).id == info.id)

    demo.step("Tamper with the audit ledger")
    database = demo.root / ".sealml" / "sealml.db"
    ws.close()
    connection = sqlite3.connect(database)
    with connection:
        (body,) = connection.execute("SELECT body FROM ledger_events WHERE seq = 2").fetchone()
        forged = bytes(body).replace(b'"principal":"admin"', b'"principal":"dana"')
        connection.execute("UPDATE ledger_events SET body = ? WHERE seq = 2", (forged,))
    connection.close()
    demo.say("rewrote event 2 in the database to blame dana instead of admin")
    ws = Workspace.open(demo.root, passphrase=passphrase)
    ws.login("admin", admin_password)
    ledger = ws.audit_verify()
    demo.expect("`audit verify` detects the edit", not ledger.ok)
    for problem in ledger.problems[:2]:
        demo.say(f"    [dim]{escape(problem)}[/dim]")
    connection = sqlite3.connect(database)
    with connection:
        connection.execute("UPDATE ledger_events SET body = ? WHERE seq = 2", (body,))
    connection.close()
    demo.expect("with the original event restored the ledger verifies", ws.audit_verify().ok)

    demo.step("Prove the ledger to someone who has only the verifier key")
    events = ws.audit_events(EventFilter(action="artifact.put", resource=f"artifact:{info.id}"))
    proof = ws.audit_prove(events[0].seq)
    fields, checkpoint = check_inclusion(proof, ws.verifier)
    demo.expect(
        f"inclusion proof: event {fields['seq']} ({fields['action']}) is in the signed tree "
        f"of size {checkpoint.size}",
        True,
    )
    old_note = ws.audit_checkpoint()
    second = data_dir / SECOND_DATASET if data_dir is not None else demo.data
    ws.put(second if second.is_file() else demo.data, "dataset", "erasure-request-subject")
    old, new = check_consistency(ws.audit_consistency(old_note), ws.verifier)
    demo.expect(f"consistency proof: tree {new.size} extends the saved tree {old.size}", True)
    demo.say(f"verifier key: {ws.verifier.encode()}")

    demo.step("Rotate the key-encryption key; crypto-shred for an erasure request")
    rotation = ws.rotate_keys()
    demo.say(
        f"new KEK {rotation['kek']}, {rotation['rewrapped']} data keys re-wrapped, "
        f"old KEK(s) {', '.join(rotation['destroyed'])} destroyed; no body re-encrypted"
    )
    demo.expect("data still reads after rotation", ws.verify(info.id).id == info.id)
    shredded = ws.shred("erasure-request-subject", reason="GDPR art. 17 request")
    demo.expect_refusal(
        "the shredded artifact can never be read again",
        lambda: ws.get(shredded.id, copy, overwrite=True),
        ShreddedError,
    )
    trail = ws.audit_events(EventFilter(resource=f"artifact:{shredded.id}"))
    demo.expect(
        "the ledger keeps its history: " + ", ".join(e.fields()["action"] for e in trail),
        [e.fields()["action"] for e in trail][:1] == ["artifact.put"],
    )

    demo.step("Rotate the workspace key (checkpoints, principal records, policy, API keys)")
    handed = ws.rotate_workspace_key()
    demo.say(
        f"{handed['principals']} principal records and the policy attested again; the "
        "ledger's handover checkpoint is signed by the old key and the new one"
    )
    demo.expect(
        "the checkpoint saved under the old key still proves the history it covers",
        ws.audit_verify([old_note]).ok,
    )
    demo.say(f"new verifier key: {handed['verifier']}")
    final = ws.verify_store()
    demo.expect("the whole workspace verifies", final.ok and ws.audit_verify().ok)
    ws.close()
    console.print()


def _blob_name(ws: Workspace, artifact_id: str) -> str:
    from ..db.models import ArtifactRow

    with ws.db.read() as session:
        row = session.get(ArtifactRow, artifact_id)
        assert row is not None
        return row.blob_name
