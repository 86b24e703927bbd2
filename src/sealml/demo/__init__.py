"""``sealml demo``: the whole secure pipeline on the Adult census data shipped with sealml.

It creates a workspace (a temporary folder unless ``--keep``), two people with separate
duties and a gate policy, runs the pipeline in ``pipeline.py`` (pinned ingest, validation,
PII handling, poisoning screening, watermarked training, evaluation of robustness,
fairness and privacy), registers the model (scanned and signed), has the second person
approve it with a one-time code and promote it through the gates, writes the model card,
shows a tampered model being refused, verifies the ledger and sums up. ``--walkthrough``
runs the earlier guided tour of sealing, tampering and proofs instead.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..access import totp
from ..config import CONFIG_NAME, GateSection
from ..crypto.secret import Secret
from ..errors import IntegrityError, SealmlError
from ..fsutil import atomic_writer
from ..pipeline.loader import load_pipeline
from ..workspace import Workspace
from ..workspace.once import one_operation
from ..workspace.runs import StageOutcome
from .credentials import write_credentials
from .walkthrough import run_walkthrough

MODEL = "adult-income"
GATES = GateSection(
    require_provenance=True,
    require_evaluation=True,
    min_metrics={"accuracy": 0.8, "robustness.accuracy@0.1": 0.7},
    # Equalised odds over sex, race and their intersection, groups of 30 or more: the
    # demo's model measures 0.09-0.16 from run to run (each run's secret watermark trigger
    # set changes the trees, and the smallest intersections move the most), so the gate
    # sits above that spread; 0.15 failed about one run in twenty.
    max_metrics={"privacy.membership_auc": 0.6, "fairness.equalized_odds_difference": 0.2},
)
STAGE_TITLES = {
    "ingest_census": "ingest the pinned dataset",
    "label": "label incomes",
    "validate_validated": "validate against the schema",
    "protect_protected": "handle personal data",
    "screen_screened": "screen for poisoning",
    "split": "split train / test",
    "train": "train (watermarked)",
    "evaluate_model": "evaluate robustness, fairness, privacy",
}
AFTER = ["register (scan, sign, SBOM)", "approve (second person, TOTP)",
         "promote through the gates", "write the model card", "tamper with the model",
         "verify the ledger"]  # fmt: skip


def run_demo(keep: Path | None = None, walkthrough: bool = False) -> None:
    """Run the demo; raises IntegrityError (exit 1) if any protection failed to hold."""
    if walkthrough:
        run_walkthrough(keep=keep, data=None)
        return
    console = Console(highlight=False)
    base = Path(tempfile.mkdtemp(prefix="sealml-demo-")) if keep is None else keep
    if keep is not None and (keep / "workspace").exists():
        raise SealmlError(f"{keep / 'workspace'} already exists; choose an empty folder")
    try:
        result = run_steps(base, console, keep_credentials=keep is not None)
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
    console.print(result.summary)


def _timed(timings: dict[str, float], title: str, start: float) -> None:
    timings[title] = round(time.perf_counter() - start, 2)


@dataclass
class DemoRun:
    """What :func:`run_steps` did: the summary to print and where the time went."""

    summary: Any
    steps: dict[str, float]  # wall seconds per step (a stage's sealing included)
    computing: dict[str, float]  # per pipeline stage: seconds in the stage's own code


def run_steps(base: Path, console: Console, keep_credentials: bool = False) -> DemoRun:
    """Run every step of the demo in *base* (``bench/demo.py`` reads the timings); with
    *keep_credentials*, write the generated secrets beside the workspace so that it can be
    opened afterwards."""
    timings: dict[str, float] = {}
    computing: dict[str, float] = {}
    passwords = {name: Secret(secrets.token_urlsafe(18)) for name in ("admin", "dana", "erin")}
    passphrase = Secret(secrets.token_urlsafe(24))
    root = base / "workspace"
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("secure pipeline", total=1 + len(STAGE_TITLES) + len(AFTER))
        start = time.perf_counter()
        workspace = Workspace.init(root, passphrase=passphrase, admin_password=passwords["admin"])
        workspace.add_user("dana", ["data-scientist", "data-steward"], password=passwords["dana"])
        workspace.add_user("erin", ["ml-engineer"], password=passwords["erin"])
        credentials = write_credentials(root, passphrase, passwords) if keep_credentials else None
        # As a person would: propose the gates in sealml.toml, then approve them.
        workspace.config.registry.gates["production"] = GATES
        with atomic_writer(root / CONFIG_NAME) as handle:
            handle.write(workspace.config.dump())
        workspace.approve_policy()
        workspace.close()
        _timed(timings, "create workspace, people, gates", start)
        progress.advance(overall)

        folder = base / "pipeline"
        folder.mkdir()
        package = resources.files(__package__)
        for name in ("pipeline.py", "adult.csv.gz"):
            (folder / name).write_bytes(package.joinpath(name).read_bytes())
        dana = _open(root, "dana", passwords, passphrase)
        current: dict[str, Any] = {}

        def on_stage(name: str, outcome: StageOutcome | None) -> None:
            title = STAGE_TITLES.get(name, name)
            if outcome is None:
                current["start"] = time.perf_counter()
                progress.update(overall, description=title)
            else:
                _timed(timings, title, current["start"])
                computing[title] = round(outcome.seconds, 2)
                progress.advance(overall)

        report = dana.run_pipeline(load_pipeline(folder / "pipeline.py"), on_stage=on_stage)
        evaluation = json.loads(dana.read_bytes(report.artifacts["evaluation"]))

        def step(title: str) -> float:
            progress.update(overall, description=title)
            return time.perf_counter()

        start = step(AFTER[0])
        version = dana.register_model(report.artifacts["model"], MODEL).version
        dana.close()
        _timed(timings, AFTER[0], start)
        progress.advance(overall)

        start = step(AFTER[1])
        erin = _open(root, "erin", passwords, passphrase)
        secret = erin.totp_enroll().secret
        # The demo plays erin's authenticator app; a person types the code it shows.
        erin.approve_model(MODEL, version, "production", totp.current_code(secret))
        _timed(timings, AFTER[1], start)
        progress.advance(overall)

        start = step(AFTER[2])
        # Promotion checks the gates again; inside one operation it does not verify
        # again what the report has just verified.
        with one_operation():
            checks = erin.gate_report(MODEL, version, "production")
            promoted = all(c.passed for c in checks)
            if promoted:
                erin.promote_model(MODEL, version, "production")
        _timed(timings, AFTER[2], start)
        progress.advance(overall)

        start = step(AFTER[3])
        card = _write_card(erin, version, base)
        _timed(timings, AFTER[3], start)
        progress.advance(overall)

        start = step(AFTER[4])
        refused = _tamper_refused(erin, version)
        _timed(timings, AFTER[4], start)
        progress.advance(overall)

        start = step(AFTER[5])
        admin = _open(root, "admin", passwords, passphrase)
        ledger = admin.audit_verify()
        admin.close()
        _timed(timings, AFTER[5], start)
        progress.update(overall, description="done")
        progress.advance(overall)
        erin.close()
    if not (promoted and refused and ledger.ok):
        raise IntegrityError("the demo model did not pass its gates or a tamper went unnoticed")
    summary = _summary(
        base, credentials, evaluation, checks, card, timings, ledger.events, len(report.artifacts)
    )
    return DemoRun(summary, timings, computing)


def _open(root: Path, user: str, passwords: dict[str, Secret], passphrase: Secret) -> Workspace:
    workspace = Workspace.open(root, passphrase=passphrase)
    workspace.login(user, passwords[user])
    return workspace


def _write_card(workspace: Workspace, version: int, base: Path) -> Path:
    from ..governance import modelcard

    facts = workspace.model_card(MODEL, version)
    target = base / f"{MODEL}-v{version}-card.html"
    target.write_text(modelcard.to_html(facts), encoding="utf-8")
    target.with_suffix(".md").write_text(modelcard.markdown(facts), encoding="utf-8")
    return target


def _tamper_refused(workspace: Workspace, version: int) -> bool:
    """Flip one byte of the sealed model on disk: loading must refuse it; then restore."""
    from ..store.blobs import LocalBlobStore

    described = workspace.show_model(MODEL, version)
    with workspace.db.read() as session:
        blob_name = workspace._find(session, described.artifact_id).blob_name
    assert isinstance(workspace.blobs, LocalBlobStore)
    path = workspace.blobs.path_of(blob_name)
    data = bytearray(path.read_bytes())
    offset = len(data) // 2
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    try:
        workspace.resolve_model(MODEL, version)
        refused = False
    except IntegrityError:
        refused = True
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    workspace.resolve_model(MODEL, version)  # loads again once restored
    return refused


def _summary(
    base: Path,
    credentials: Path | None,
    evaluation: dict[str, Any],
    checks: list[Any],
    card: Path,
    timings: dict[str, float],
    events: int,
    artifacts: int,
) -> Any:
    from rich.console import Group
    from rich.markup import escape  # paths come from --keep, and may hold brackets

    gates = Table("gate check", "requirement", "measured", "result", title="production gates")
    for check in checks:
        result = "[green]pass[/green]" if check.passed else "[red]fail[/red]"
        gates.add_row(check.check, check.requirement, check.measured, result)
    steps = Table("step", "seconds", title="time per step")
    for title, seconds in timings.items():
        steps.add_row(title, f"{seconds:.2f}")
    metrics = evaluation.get("metrics", {})
    lines = [
        f"[bold green]{MODEL} is in production[/bold green], signed, scanned, watermarked and "
        "approved by a second person, with a CycloneDX SBOM of what it was built with.",
        f"Protected: {artifacts} pipeline outputs sealed (AES-256-GCM, one key each), signed "
        f"and attested back to the pinned source; {events} ledger events, verified.",
        f"Measured: accuracy {metrics.get('accuracy')}, robust accuracy at 0.1 std "
        f"{metrics.get('robustness.accuracy@0.1')}, membership-inference AUC "
        f"{metrics.get('privacy.membership_auc')}, demographic-parity difference "
        f"{metrics.get('fairness.demographic_parity_difference')}.",
        "Tampering: one flipped byte in the sealed model was refused at load time.",
        f"Model card: {escape(str(card))} (and .md)"
        if credentials is not None
        else "Model card: written "
        "(the workspace was temporary; use --keep DIR to keep everything).",
        f"Workspace and ledger: {escape(str(base / 'workspace'))}"
        if credentials is not None
        else "",
        f"Its generated secrets (demo only, 0600): {escape(str(credentials))}"
        if credentials
        else "",
        f"Look around: set -a; . {escape(str(credentials))}; set +a; "
        f"sealml model show {MODEL}@production"
        if credentials is not None
        else "",
        "In a browser: sealml ui --dev-tls, then https://127.0.0.1:8600 (sign in as admin)"
        if credentials is not None
        else "",
    ]
    return Group(Panel("\n".join(line for line in lines if line)), gates, steps)
