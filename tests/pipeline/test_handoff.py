"""The local executor's in-memory handoff and background sealing: consumers get private
copies, what is sealed is what the producer returned, and a sealing failure stops the run
without losing the stages before it."""

from __future__ import annotations

import os
import pickle
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sealml import Workspace
from sealml.errors import UsageError
from sealml.pipeline import codecs
from sealml.pipeline.background import ProcessWriter, WriterStoppedError
from sealml.pipeline.loader import load_pipeline
from sealml.workspace.runs import start_sealing_process

FRAMES = """
from pathlib import Path
import pandas as pd
from sealml.pipeline import Pipeline, Source, stage


@stage(inputs={"raw": "file"}, outputs={"frame": "dataset", "meta": "report"})
def make(raw):
    values = [int(x) for x in raw.split()]
    return {"frame": pd.DataFrame({"x": values}), "meta": {"n": len(values)}}


@stage(inputs={"frame": "dataset", "meta": "report"}, outputs={"doubled": "dataset"})
def mutate(frame, meta):
    # A consumer that changes its inputs in place must not change what was sealed.
    frame["x"] = frame["x"] * 2
    frame["extra"] = 1
    meta["n"] = -1
    return {"doubled": frame}


@stage(inputs={"doubled": "dataset"}, outputs={"bad": "dataset"})
def unsealable(doubled, broken=True):
    # An object column Arrow cannot convert passes the type check and fails while
    # sealing, on the background writer.
    return {"bad": pd.DataFrame({"c": [1, "a", object()] if broken else [1, 2, 3]})}


pipeline = Pipeline(
    "frames",
    stages=[make, mutate],
    sources={"raw": Source(Path("numbers.txt"))},
)
"""


def _write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir(exist_ok=True)
    (folder / "numbers.txt").write_text("1 2 3\n")
    path = folder / "frames_pipeline.py"
    path.write_text(textwrap.dedent(text))
    return path


def _frame(workspace: Workspace, artifact_id: str) -> Any:
    return codecs.decode("dataset", workspace.read_bytes(artifact_id))


def test_consumers_change_private_copies_not_what_was_sealed(
    workspace: Workspace, tmp_path: Path
) -> None:
    report = workspace.run_pipeline(load_pipeline(_write(tmp_path, FRAMES)), "local")
    sealed = _frame(workspace, report.artifacts["frame"])
    pd.testing.assert_frame_equal(sealed, pd.DataFrame({"x": [1, 2, 3]}))
    assert codecs.decode("report", workspace.read_bytes(report.artifacts["meta"])) == {"n": 3}
    assert list(_frame(workspace, report.artifacts["doubled"])["x"]) == [2, 4, 6]


def test_sealing_failure_stops_the_run_and_keeps_earlier_stages(
    workspace: Workspace, tmp_path: Path
) -> None:
    text = FRAMES.replace("stages=[make, mutate]", "stages=[make, mutate, unsealable]")
    loaded = load_pipeline(_write(tmp_path, text))
    with pytest.raises(UsageError, match="stage 'unsealable' output 'bad'"):
        workspace.run_pipeline(loaded, "local")
    names = {info.name for info in workspace.ls()}
    assert {"frames/frame", "frames/doubled", "frames/mutate.intoto.jsonl"} <= names
    assert "frames/bad" not in names and "frames/unsealable.intoto.jsonl" not in names
    assert workspace.verify_store().ok
    again = workspace.run_pipeline(loaded, "local", {"broken": False})
    assert {s.stage: s.status for s in again.stages} == {
        "make": "cached",
        "mutate": "cached",
        "unsealable": "executed",
    }


def test_wrong_output_type_is_refused_before_the_next_stage(
    workspace: Workspace, tmp_path: Path
) -> None:
    text = FRAMES.replace('return {"frame": pd.DataFrame({"x": values})', 'return {"frame": values')
    with pytest.raises(UsageError, match="stage 'make' output 'frame': a dataset must be"):
        workspace.run_pipeline(load_pipeline(_write(tmp_path, text)), "local")
    assert not any(info.name.startswith("frames/frame") for info in workspace.ls())


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({"a": [1, 2], "b": ["x", None]}),
        pd.DataFrame({"a": [1.5, float("nan")]}, index=pd.Index([10, 3], name="row")),
        pd.DataFrame(
            {
                "c": pd.Categorical(["u", "v", "u"], categories=["u", "v", "w"]),
                "t": pd.to_datetime(["2024-01-01", "2024-01-02", None]),
                "i": pd.Series([1, 2, 3], dtype="int8"),
            }
        ),
        pd.DataFrame({"a": [1, 2, 3]}, index=pd.RangeIndex(5, 11, 2)),
    ],
)
def test_datasets_read_back_exactly(frame: pd.DataFrame) -> None:
    """The local executor hands consumers the producer's object, other executors the
    decoded bytes: the two must be the same frame."""
    data = codecs.encode("dataset", frame, "test")
    assert data.startswith(b"PAR1") and data == codecs.encode("dataset", frame.copy(), "t")
    # Equal frames give equal bytes whatever their memory layout (a pickled copy rebuilds
    # its Arrow buffers, with different padding bits).
    assert data == codecs.encode("dataset", pickle.loads(pickle.dumps(frame)), "t")  # noqa: S301
    back = codecs.decode("dataset", data)
    pd.testing.assert_frame_equal(
        back, frame, check_exact=True, check_index_type=True, check_column_type=True
    )


def test_a_dataset_that_is_not_parquet_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Parquet file"):
        codecs.decode("dataset", b"PK\x03\x04 not a dataset")


def _sealing_processes() -> list[int]:
    """Our children running the sealing process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = next(line for line in status.splitlines() if line.startswith("PPid:"))
        if int(parent.split()[1]) == os.getpid() and b"sealml.pipeline.writer" in command:
            found.append(int(entry.name))
    return found


KILLER = FRAMES.replace(
    """def mutate(frame, meta):""",
    """def mutate(frame, meta):
    import os, signal
    os.kill(int(os.environ["SEALML_TEST_KILL"]), signal.SIGKILL)""",
)


def test_a_killed_sealing_process_fails_the_run_cleanly_and_is_replaced(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert start_sealing_process().wait_ready(120)
    (pid,) = _sealing_processes()
    monkeypatch.setenv("SEALML_TEST_KILL", str(pid))
    killer = load_pipeline(_write(tmp_path, KILLER))
    with pytest.raises(WriterStoppedError, match="sealing process stopped"):
        workspace.run_pipeline(killer, "local")
    assert workspace.verify_store().ok
    assert workspace.audit_verify().ok
    monkeypatch.setenv("SEALML_TEST_KILL", "0")  # signal 9 to "pid 0" would hit our group
    monkeypatch.setattr(os, "kill", lambda *_: None)
    assert start_sealing_process().wait_ready(120)
    report = workspace.run_pipeline(killer, "local")
    assert _sealing_processes() and pid not in _sealing_processes()
    assert list(_frame(workspace, report.artifacts["doubled"])["x"]) == [2, 4, 6]


def test_concurrent_runs_share_the_sealing_process_or_use_a_thread(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sealml import Secret
    from sealml.crypto.kdf import FAST_PARAMS

    from ..conftest import ADMIN_PASSWORD, PASSPHRASE

    workspaces = [
        Workspace.init(
            tmp_path / f"ws{index}",
            passphrase=Secret(PASSPHRASE),
            admin_password=Secret(ADMIN_PASSWORD),
            kdf=FAST_PARAMS,
        )
        for index in range(3)
    ]

    def one(index: int) -> list[int]:
        folder = tmp_path / f"p{index}"
        folder.mkdir()
        ws = workspaces[index]
        report = ws.run_pipeline(load_pipeline(_write(folder, FRAMES)), "local")
        return list(_frame(ws, report.artifacts["doubled"])["x"])

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(one, range(3)))
    assert results == [[2, 4, 6]] * 3
    for ws in workspaces:
        assert ws.verify_store().ok
        ws.close()


def test_the_sealing_process_advances_the_witness_after_answering(
    workspace: Workspace, tmp_path: Path
) -> None:
    import time

    from sealml.ledger.log import Ledger

    assert start_sealing_process().wait_ready(120)
    before = workspace.witness.load()
    workspace.run_pipeline(load_pipeline(_write(tmp_path, FRAMES)), "local")
    with workspace.db.read() as session:
        latest = Ledger.latest_checkpoint(session)
    assert latest is not None and (before is None or latest.size > before.size)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        witnessed = workspace.witness.load()
        if witnessed is not None and witnessed.size == latest.size:
            break
        time.sleep(0.05)
    witnessed = workspace.witness.load()
    assert witnessed is not None and witnessed.size == latest.size
    assert workspace.audit_verify().ok


SHARED = """
from pathlib import Path
from sealml.pipeline import Pipeline, Source, stage

SEEN = {}


@stage(inputs={"raw": "file"}, outputs={"meta": "report"})
def make(raw):
    SEEN["made"] = {"n": len(raw.split())}
    return {"meta": SEEN["made"]}


@stage(inputs={"meta": "report"}, outputs={"first": "report"})
def first(meta):
    SEEN["first"] = meta
    return {"first": dict(meta)}


@stage(inputs={"meta": "report", "first": "report"}, outputs={"last": "report"})
def last(meta, first):
    SEEN["last"] = meta
    meta["n"] = -1  # the last reader may change it: nobody reads it after
    return {"last": dict(meta)}


pipeline = Pipeline(
    "shared",
    stages=[make, first, last],
    sources={"raw": Source(Path("numbers.txt"))},
)
"""


@pytest.mark.parametrize("sealing_process", [False, True])
def test_only_the_last_consumer_gets_the_producers_object(
    workspace: Workspace, tmp_path: Path, sealing_process: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sealing_process:
        assert start_sealing_process().wait_ready(120)
    else:  # sealing inline, in this process
        monkeypatch.setattr(ProcessWriter, "ready", classmethod(lambda *_, **__: None))
    loaded = load_pipeline(_write(tmp_path, SHARED))
    seen = loaded.pipeline.stages[0].function.__globals__["SEEN"]
    report = workspace.run_pipeline(loaded, "local")
    assert seen["first"] is not seen["made"]
    assert seen["last"] is seen["made"]
    assert codecs.decode("report", workspace.read_bytes(report.artifacts["meta"])) == {"n": 3}
