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
