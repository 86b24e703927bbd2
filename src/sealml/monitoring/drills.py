"""Incident drills: an attack or failure simulated against a copy of the workspace, and
whether sealml's controls detected it, how fast, and whether containment held.

The real workspace is only read (to copy it); every change happens in a temporary copy
with a state folder of its own, removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import CONFIG_NAME, AlertRule, load_config, shared_outside
from ..errors import IntegrityError, SealmlError, UsageError
from ..store.blobs import LocalBlobStore

if TYPE_CHECKING:
    from ..workspace import Workspace

SCENARIOS = (
    "tampered-model",
    "poisoned-batch",
    "drifted-stream",
    "stolen-key",
    "rolled-back-ledger",
)


@dataclass(frozen=True)
class DrillResult:
    scenario: str
    detected: bool
    control: str  # what caught it
    seconds: float  # from the attack to detection
    contained: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@contextlib.contextmanager
def workspace_copy(root: Path, open_copy: Callable[[Path], Workspace]) -> Iterator[Workspace]:
    """A throw-away copy of the workspace at *root*, opened, with its own state folder.

    Refused when the folder does not hold the whole workspace: a drill on the copy would
    then tamper with the original's database or blobs.
    """
    if (shared := shared_outside(root, load_config(root / CONFIG_NAME))) is not None:
        raise UsageError(f"drills run on a copy of the workspace folder; {shared}, outside it")
    with tempfile.TemporaryDirectory(prefix="sealml-drill-") as folder:
        copy = Path(folder) / "workspace"
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns("serve-tls"))
        saved = os.environ.get("SEALML_STATE_DIR")
        os.environ["SEALML_STATE_DIR"] = str(Path(folder) / "state")
        try:
            workspace = open_copy(copy)
            try:
                yield workspace
            finally:
                workspace.close()
        finally:
            if saved is None:
                os.environ.pop("SEALML_STATE_DIR", None)
            else:
                os.environ["SEALML_STATE_DIR"] = saved


def _timed(check: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = check()
    return result, time.perf_counter() - started


def tampered_model(ws: Workspace, name: str, ref: str) -> DrillResult:
    """Flip one byte of the served model's blob; loading it must fail."""
    described = ws.show_model(name, ref)
    assert isinstance(ws.blobs, LocalBlobStore)  # workspace_copy refuses any other
    with ws.db.read() as session:
        blob = ws.blobs.path_of(ws._find(session, described.artifact_id).blob_name)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    started = time.perf_counter()
    try:
        ws.resolve_model(name, ref)
    except IntegrityError as error:
        seconds = time.perf_counter() - started
        return DrillResult("tampered-model", True, "sealed-content verification on load",
                           seconds, True, str(error)[:200])  # fmt: skip
    return DrillResult("tampered-model", False, "-", 0.0, False, "the tampered model loaded")


def poisoned_batch(ws: Workspace, name: str, ref: str) -> DrillResult:
    """A retraining batch with a fifth of its labels flipped; screening must refuse it."""
    from ..data.screening import ScreeningGateError, ScreeningPolicy, screen

    described = ws.show_model(name, ref)
    batch = ws.reference_sample(name, described.version)
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(batch), len(batch) // 5, replace=False)
    labels = batch["prediction"].to_numpy().copy()
    values = np.unique(labels)
    if len(values) < 2:
        raise UsageError("the poisoned-batch drill needs a classifier with two classes or more")
    labels[flipped] = [
        values[(np.searchsorted(values, v) + 1) % len(values)] for v in labels[flipped]
    ]
    batch = batch.assign(prediction=labels)
    policy = ScreeningPolicy(label="prediction", max_flagged_share=0.05)
    started = time.perf_counter()
    try:
        report, _ = screen(batch, policy)
    except ScreeningGateError as error:
        return DrillResult("poisoned-batch", True, "poisoning screening (label issues)",
                           time.perf_counter() - started, True, str(error)[:200])  # fmt: skip
    return DrillResult("poisoned-batch", False, "-", 0.0, False,
                       f"only {report.flagged_share:.1%} flagged")  # fmt: skip


def drifted_stream(ws: Workspace, name: str, ref: str) -> DrillResult:
    """Live inputs with one numeric input shifted by a standard deviation; monitoring must
    alert and the critical rule must freeze the model."""
    import pandas as pd

    described = ws.show_model(name, ref)
    stream = ws.reference_sample(name, described.version).drop(columns=["prediction"])
    numeric = [c for c in stream.columns if pd.api.types.is_numeric_dtype(stream[c])]
    if not numeric:
        raise UsageError("the drifted-stream drill needs a numeric input")
    column = numeric[0]
    stream[column] = stream[column] + stream[column].std()
    rule = AlertRule(name="drill-drift", metric="drifted_columns", above=0,
                     severity="critical", actions=["freeze"])  # fmt: skip
    _check_only(ws, rule)
    outcome, seconds = _timed(lambda: ws.monitor_check(name, ref, data=stream))
    frozen = ws.serving_state(name, str(ref))[2] is not None
    return DrillResult("drifted-stream", column in outcome.run.report.drifted,
                       "drift monitoring (monitor run)", seconds, frozen,
                       f"drifted: {', '.join(outcome.run.report.drifted)}; "
                       f"incident {outcome.incident}")  # fmt: skip


def _check_only(ws: Workspace, rule: AlertRule) -> None:
    """Have the drill's copy check *rule* alone and alert nobody outside: its approved
    monitoring settings are replaced in memory (the copy's database is not written)."""
    assert ws.approved is not None
    monitor = ws.approved.monitor.model_copy(
        update={"rules": [rule], "webhook_url": None, "smtp_host": None}
    )
    ws.approved = dataclasses.replace(ws.approved, monitor=monitor)


def stolen_key(ws: Workspace, name: str, ref: str) -> DrillResult:
    """A stolen key sweeping the input space of a live server (in process); the extraction
    detector must alert, throttle it, and monitoring must revoke it."""
    import httpx

    from ..serving.app import create_app
    from ..serving.observability import JsonLog
    from ..serving.runtime import Runtime
    from ..serving.target import Target

    key, text = ws.create_api_key("drill-stolen", scopes=["predict"], models=[name])
    settings = ws.serve_settings.model_copy(
        update={"extraction_window": 100, "poll_seconds": 3600, "log_sample": 0.0}
    )
    quiet = open(os.devnull, "w")  # noqa: SIM115 (closed in the finally below)
    runtime = Runtime(ws, Target(name, str(ref)), settings, log=JsonLog(stream=quiet))
    runtime.start()
    try:
        served = runtime.current
        if served is None or served.profile is None:
            raise UsageError("the stolen-key drill needs a model with a feature profile")
        rng = np.random.default_rng(1)

        def instance() -> dict[str, Any]:
            made: dict[str, Any] = {}
            for feature in served.profile.features:  # type: ignore[union-attr]
                if feature.kind == "category":
                    made[feature.name] = str(rng.choice(sorted(feature.categories)))
                elif feature.kind == "boolean":
                    made[feature.name] = bool(rng.integers(0, 2))
                else:
                    low, high = feature.minimum or 0.0, feature.maximum or 1.0
                    value = rng.uniform(low, high)
                    made[feature.name] = round(value) if feature.kind == "integer" else value
            return made

        async def sweep() -> float:
            app = create_app(runtime)
            transport = httpx.ASGITransport(app=app)
            started = time.perf_counter()
            async with httpx.AsyncClient(transport=transport, base_url="https://drill") as client:
                for _ in range(30):
                    await client.post(f"/v1/models/{name}/predict",
                                      json={"instances": [instance() for _ in range(10)]},
                                      headers={"x-api-key": text})  # fmt: skip
                    if key.principal in runtime.throttled:
                        return time.perf_counter() - started
            return -1.0

        seconds = asyncio.run(sweep())
        runtime.recorder.flush()
    finally:
        runtime.stop()
        quiet.close()
    if seconds < 0:
        return DrillResult("stolen-key", False, "-", 0.0, False, "no extraction alert")
    rule = AlertRule(name="drill-extraction", metric="extraction_alerts", above=0,
                     severity="critical", actions=["revoke-key"])  # fmt: skip
    _check_only(ws, rule)
    reference = ws.reference_sample(name, ws.show_model(name, ref).version)
    ws.monitor_check(name, ref, data=reference.drop(columns=["prediction"]))
    revoked = next(k for k in ws.api_keys() if k.id == key.id).revoked_at is not None
    return DrillResult("stolen-key", True, "extraction detector (serving), then monitoring",
                       seconds, revoked, "throttled at once; key revoked by the incident"
                       if revoked else "throttled; the key was not revoked")  # fmt: skip


def rolled_back_ledger(ws: Workspace, name: str, ref: str) -> DrillResult:
    """The database swapped for an older copy of itself (taken with SQLite's backup API
    before a few more events were written); the checkpoint this user's witness keeps must
    expose it."""
    del name, ref
    database = ws.root / ".sealml" / "sealml.db"
    if not database.exists():
        raise UsageError("the rolled-back-ledger drill needs the default SQLite database")
    older = database.with_name("drill-older.db")
    with (
        contextlib.closing(sqlite3.connect(database)) as live,
        contextlib.closing(sqlite3.connect(older)) as copy,
    ):
        live.backup(copy)
    ws.record([ws.event("drill.marker", "drill:ledger", step=n) for n in range(3)])
    with (
        contextlib.closing(sqlite3.connect(older)) as copy,
        contextlib.closing(sqlite3.connect(database)) as live,
    ):
        copy.backup(live)
    started = time.perf_counter()
    try:
        report = ws.audit_verify()
        problems = report.problems
    except SealmlError as error:
        problems = [str(error)]
    if problems:
        return DrillResult("rolled-back-ledger", True, "witness checkpoint (audit verify)",
                           time.perf_counter() - started, True, problems[0][:200])  # fmt: skip
    return DrillResult("rolled-back-ledger", False, "-", 0.0, False, "the rollback went unseen")


DRILLS: dict[str, Callable[[Any, str, str], DrillResult]] = {
    "tampered-model": tampered_model,
    "poisoned-batch": poisoned_batch,
    "drifted-stream": drifted_stream,
    "stolen-key": stolen_key,
    "rolled-back-ledger": rolled_back_ledger,
}
