"""Executors: the sandbox really isolates, and every executor gives the same digests."""

from __future__ import annotations

import shutil
import socket
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from sealml import Secret, Workspace
from sealml.crypto.kdf import FAST_PARAMS
from sealml.pipeline.execution import StageFailedError
from sealml.pipeline.loader import load_pipeline

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adult_pipeline.py"
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (CI installs it)"
)

PROBE = """
import socket
from pathlib import Path
from sealml.pipeline import Pipeline, stage


@stage(outputs={"result": "report"})
def probe(action="none", target="", port=0):
    if action == "connect":
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
    elif action == "write":
        Path(target).write_text("escaped")
    return {"result": {"action": action}}


pipeline = Pipeline("probe", stages=[probe])
"""


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    path = tmp_path / "probe_pipeline.py"
    path.write_text(textwrap.dedent(PROBE))
    return path


@pytest.fixture
def listener() -> Any:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@needs_bwrap
def test_sandboxed_stage_cannot_open_a_socket(
    workspace: Workspace, probe: Path, listener: int
) -> None:
    loaded = load_pipeline(probe)
    with pytest.raises(StageFailedError, match=r"OSError|unreachable|refused"):
        workspace.run_pipeline(loaded, "sandbox", {"action": "connect", "port": listener})
    # The same stage outside the sandbox reaches the listener: the refusal was the sandbox.
    workspace.run_pipeline(loaded, "local", {"action": "connect", "port": listener})


@needs_bwrap
@pytest.mark.parametrize("where", ["tmp_path", "/tmp", "home"])
def test_sandboxed_stage_cannot_write_outside_its_scratch(
    workspace: Workspace, probe: Path, tmp_path: Path, where: str
) -> None:
    target = {
        "tmp_path": tmp_path / "escaped.txt",
        "/tmp": Path("/tmp") / f"sealml-escape-{tmp_path.name}",
        "home": workspace.root / "escaped.txt",
    }[where]
    loaded = load_pipeline(probe)
    with pytest.raises(StageFailedError, match=r"Read-only file system|Permission denied"):
        workspace.run_pipeline(loaded, "sandbox", {"action": "write", "target": str(target)})
    assert not target.exists()
    workspace.run_pipeline(loaded, "local", {"action": "write", "target": str(target)})
    assert target.read_text() == "escaped"
    target.unlink()


def _digests(root: Path, executor: str) -> dict[str, str]:
    workspace = Workspace.init(
        root,
        passphrase=Secret("digest test"),
        admin_password=Secret("digest-pass"),
        kdf=FAST_PARAMS,
    )
    try:
        report = workspace.run_pipeline(load_pipeline(EXAMPLE), executor)
        assert {s.status for s in report.stages} == {"executed"}
        return {name: workspace.info(i).digest for name, i in sorted(report.artifacts.items())}
    finally:
        workspace.close()


@pytest.mark.slow
def test_example_gives_identical_digests_on_every_executor(tmp_path: Path) -> None:
    executors = ["local"]
    if shutil.which("bwrap"):
        executors.append("sandbox")
    pytest.importorskip("ray", reason="the ray extra is not installed (CI installs it)")
    executors.append("ray")
    results = {name: _digests(tmp_path / name, name) for name in executors}
    assert len(results) == 3, "CI must run all three executors"
    first = results["local"]
    assert set(first) == {"adult", "train", "test", "model", "metrics"}
    for name, digests in results.items():
        assert digests == first, f"{name} gave different artifacts"


def test_a_child_keeps_only_the_tail_of_its_standard_error(tmp_path: Path) -> None:
    import sys

    from sealml.pipeline.executors import STDERR_TAIL, run_keeping_tail

    script = (
        "import sys; sys.stdout.write('o' * 3_000_000); "
        "sys.stderr.write('e' * 3_000_000 + 'END'); sys.exit(4)"
    )
    code, tail = run_keeping_tail([sys.executable, "-c", script], {}, tmp_path)
    assert code == 4
    assert len(tail) == STDERR_TAIL and tail.endswith("eeeEND")


def test_a_pipeline_that_floods_its_output_while_loading_still_runs(
    workspace: Workspace, tmp_path: Path
) -> None:
    loud = tmp_path / "loud_pipeline.py"
    loud.write_text(
        "import os\nos.write(1, b'x' * 5_000_000)\nos.write(2, b'y' * 5_000_000)\n"
        + textwrap.dedent(PROBE)
    )
    report = workspace.run_pipeline(load_pipeline(loud), "sandbox")
    assert [step.status for step in report.stages] == ["executed"]


LIMITED = """
import subprocess
import time
from sealml.pipeline import Pipeline, stage


@stage(outputs={"result": "report"}, time_limit_seconds=TIME, memory_limit_mib=MEMORY)
def work(sleep=0.0, allocate_mib=0):
    if sleep > 1:
        subprocess.Popen(["sleep", "987654.321"])  # a child the limit must stop too
    time.sleep(sleep)
    block = bytearray(int(allocate_mib) << 20)
    return {"result": {"allocated": len(block)}}


pipeline = Pipeline("limited", stages=[work])
"""


def _limited(tmp_path: Path, time_limit: float | None, memory: int | None) -> Any:
    path = tmp_path / "limited_pipeline.py"
    path.write_text(textwrap.dedent(LIMITED).replace("TIME", repr(time_limit))
                    .replace("MEMORY", repr(memory)))  # fmt: skip
    return load_pipeline(path)


def _sleepers() -> list[str]:
    import subprocess

    found = subprocess.run(["pgrep", "-f", "sleep 987654.321"], capture_output=True, text=True)
    return found.stdout.split()


def test_a_stage_past_its_time_limit_is_stopped_with_its_children(
    workspace: Workspace, tmp_path: Path
) -> None:
    import time

    pipeline = _limited(tmp_path, 2.0, None)
    started = time.monotonic()
    with pytest.raises(StageFailedError, match="stopped after its time limit of 2 s"):
        workspace.run_pipeline(pipeline, "sandbox", {"sleep": 120})
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 10
    while _sleepers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _sleepers() == []
    report = workspace.run_pipeline(pipeline, "sandbox", {"sleep": 0.1})  # within the limit
    assert [s.status for s in report.stages] == ["executed"]


def test_a_stage_past_its_memory_limit_fails(workspace: Workspace, tmp_path: Path) -> None:
    pipeline = _limited(tmp_path, None, 1024)
    with pytest.raises(StageFailedError, match="MemoryError"):
        workspace.run_pipeline(pipeline, "sandbox", {"allocate_mib": 2048})
    report = workspace.run_pipeline(pipeline, "sandbox", {"allocate_mib": 64})
    assert workspace.read_bytes(report.artifacts["result"]) == b'{"allocated":67108864}'


def test_limits_an_executor_cannot_enforce_are_refused(
    workspace: Workspace, tmp_path: Path
) -> None:
    from sealml.errors import UsageError

    with pytest.raises(UsageError, match="local executor cannot enforce"):
        workspace.run_pipeline(_limited(tmp_path, 5.0, None), "local")
    with pytest.raises(UsageError, match="only the sandbox executor enforces"):
        workspace.run_pipeline(_limited(tmp_path, None, 512), "ray")
    with pytest.raises(UsageError, match="time limit"):
        _limited(tmp_path, -1.0, None)
    assert workspace.audit_events is not None


def test_the_workspace_default_time_limit_applies_in_the_sandbox(
    workspace: Workspace, tmp_path: Path
) -> None:
    workspace.config.pipeline.stage_time_limit_seconds = 1.5
    with pytest.raises(StageFailedError, match=r"time limit of 1\.5 s"):
        workspace.run_pipeline(_limited(tmp_path, None, None), "sandbox", {"sleep": 60})
    report = workspace.run_pipeline(_limited(tmp_path, None, None), "local", {"allocate_mib": 1})
    assert [s.status for s in report.stages] == ["executed"]  # nothing to enforce in process


def test_ray_stops_a_stage_past_its_time_limit(workspace: Workspace, tmp_path: Path) -> None:
    import time

    pytest.importorskip("ray", reason="the ray extra is not installed (CI installs it)")
    started = time.monotonic()
    with pytest.raises(StageFailedError, match="stopped after its time limit of 3 s"):
        workspace.run_pipeline(_limited(tmp_path, 3.0, None), "ray", {"sleep": 0.5 + 120})
    assert time.monotonic() - started < 90
