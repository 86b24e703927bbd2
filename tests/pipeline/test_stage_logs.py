"""What a stage prints, warns and logs is sealed as its log, on every executor, with its
secrets blanked; nothing downstream reads it."""

from __future__ import annotations

import importlib.util
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sealml import Workspace
from sealml.pipeline.capture import BoundedText, captured
from sealml.pipeline.loader import load_pipeline

PIPELINE = """
import logging
import warnings
from sealml.pipeline import Pipeline, stage


@stage(outputs={"numbers": "report"}, secrets=["watermark"])
def make(watermark_key, count=3):
    print("epoch 1 loss 0.50")
    logging.getLogger("trainer").info("epoch 2 loss 0.25")
    warnings.warn("learning rate is high")
    print("the key is", watermark_key)
    return {"numbers": {"values": list(range(int(count)))}}


@stage(inputs={"numbers": "report"}, outputs={"total": "report"})
def add(numbers):
    return {"total": {"sum": sum(numbers["values"])}}


pipeline = Pipeline("logged", stages=[make, add])
"""


def _pipeline(folder: Path, name: str, source: str) -> Any:
    path = folder / f"{name}_pipeline.py"
    path.write_text(textwrap.dedent(source))
    return load_pipeline(path)


def _executors() -> list[str]:
    found = ["local"]
    if shutil.which("bwrap"):
        found.append("sandbox")
    if importlib.util.find_spec("ray") is not None:
        found.append("ray")
    return found


@pytest.mark.parametrize("executor", _executors())
def test_a_stage_log_is_sealed_with_secrets_blanked(
    workspace: Workspace, tmp_path: Path, executor: str
) -> None:
    report = workspace.run_pipeline(_pipeline(tmp_path, "logged", PIPELINE), executor)
    make, add = report.stages
    assert make.log is not None and add.log is None  # a silent stage leaves no log
    text = workspace.read_bytes(make.log).decode()
    assert "epoch 1 loss 0.50" in text
    assert "INFO trainer: epoch 2 loss 0.25" in text
    assert "learning rate is high" in text
    key = workspace.named_secret("watermark-key").hex()
    assert key not in text and "the key is ***" in text
    info = workspace.info(make.log)
    assert info.kind == "report" and info.media_type == "text/plain"
    assert info.annotations["log"] == "stage"
    assert info.annotations["attestation"] == make.attestation
    assert make.log not in report.artifacts.values()


NATIVE = """
import ctypes
import os
import subprocess
from sealml.pipeline import Pipeline, stage


@stage(outputs={"numbers": "report"})
def make():
    print("from python")
    os.write(1, b"straight to descriptor 1\\n")
    os.write(2, b"straight to descriptor 2\\n")
    ctypes.CDLL(None).printf(b"from the C library's printf\\n")  # buffered until flushed
    subprocess.run(["echo", "from a child process"], check=True)
    return {"numbers": {"values": [1]}}


pipeline = Pipeline("native", stages=[make])
"""


@pytest.mark.parametrize("executor", [e for e in _executors() if e != "local"])
def test_a_process_of_its_own_keeps_native_output(
    workspace: Workspace, tmp_path: Path, executor: str
) -> None:
    (make,) = workspace.run_pipeline(_pipeline(tmp_path, "native", NATIVE), executor).stages
    assert make.log is not None
    text = workspace.read_bytes(make.log).decode()
    for line in (
        "from python",
        "straight to descriptor 1",
        "straight to descriptor 2",
        "from the C library's printf",
        "from a child process",
    ):
        assert line in text, text


def test_descriptor_capture_restores_the_descriptors(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    before = (os.fstat(1).st_ino, os.fstat(2).st_ino)
    with captured(descriptors=True) as sink:
        os.write(1, b"native line\n")
        os.write(2, b"\xff not utf-8\n")
    os.write(1, b"after the block\n")
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino) == before
    assert "native line" in sink.text() and "\ufffd not utf-8" in sink.text()
    assert "after the block" not in sink.text()
    assert "after the block" in capfd.readouterr().out


def test_a_long_log_is_cut_with_a_note() -> None:
    sink = BoundedText(limit=10)
    sink.write("0123456789abcdef")
    sink.write("more")
    assert sink.text() == "0123456789\n[sealml: 10 more characters were not kept]\n"


def test_capture_restores_logging_and_streams() -> None:
    import logging
    import sys

    root = logging.getLogger()
    level, handlers, stdout = root.level, list(root.handlers), sys.stdout
    with captured() as sink:
        print("inside")
    assert "inside" in sink.text()
    assert root.level == level and root.handlers == handlers and sys.stdout is stdout


FAILING = """
from sealml.pipeline import Pipeline, stage


@stage(outputs={"numbers": "report"}, secrets=["watermark"])
def make(watermark_key):
    print("loaded 3 rows; key", watermark_key)
    raise ValueError("the third row is malformed")


pipeline = Pipeline("failing", stages=[make])
"""


@pytest.mark.parametrize("executor", _executors())
def test_a_failed_stage_leaves_its_log_and_the_failure_names_it(
    workspace: Workspace, tmp_path: Path, executor: str
) -> None:
    from sealml.ledger import EventFilter
    from sealml.pipeline.execution import StageFailedError

    with pytest.raises(StageFailedError, match="the third row is malformed"):
        workspace.run_pipeline(_pipeline(tmp_path, "failing", FAILING), executor)
    (log,) = workspace.ls(kind="report", name="failing/make.log")
    assert log.annotations["log"] == "failed-stage"
    text = workspace.read_bytes(log.id).decode()
    assert "loaded 3 rows; key ***" in text
    assert workspace.named_secret("watermark-key").hex() not in text
    (failed,) = workspace.audit_events(EventFilter(action="stage.run", outcome="failed"))
    assert failed.fields()["details"]["log"] == log.id


def test_the_error_keeps_its_log_across_processes() -> None:
    import pickle

    from sealml.pipeline.execution import StageFailedError

    made = pickle.dumps(StageFailedError("stage 'x' failed", "printed"))
    error = pickle.loads(made)  # noqa: S301 (bytes this test just made)
    assert str(error) == "stage 'x' failed" and error.log == "printed"
