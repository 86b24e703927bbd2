"""Kill `sealml put` with SIGKILL at random moments: the workspace must still verify and
every artifact must be either wholly present or absent."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sealml import Workspace

from .conftest import reopen

KILLS = 24


def put_command(path: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "sealml", "put", str(path), "--kind", "dataset", "--name", name]


@pytest.mark.slow
def test_sigkill_during_put_leaves_a_consistent_workspace(
    workspace: Workspace, tmp_path: Path, isolated_env: Path
) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(48 << 20))
    env = {
        **os.environ,
        "SEALML_WORKSPACE": str(workspace.root),
        "SEALML_PASSPHRASE": "correct horse battery staple",
        "SEALML_USER": "admin",
        "SEALML_PASSWORD": "admin-password-1",
        "SEALML_STATE_DIR": str(isolated_env),
    }
    workspace.close()
    started = time.monotonic()
    subprocess.run(put_command(payload, "complete"), env=env, check=True, capture_output=True)
    duration = time.monotonic() - started
    rng = random.Random(20261122)
    for attempt in range(KILLS):
        process = subprocess.Popen(
            put_command(payload, f"attempt-{attempt}"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.05, duration * 1.1))
        process.send_signal(signal.SIGKILL)
        process.wait()

    ws = reopen(workspace.root)
    report = ws.verify_store()
    assert report.ok, (report.problems, [c.problem for c in report.checks if c.problem])
    assert ws.audit_verify().ok
    names = {info.name for info in ws.ls()}
    assert "complete" in names
    survivors = names - {"complete"}
    expected = payload.read_bytes()
    for name in survivors:
        assert ws.read_bytes(name) == expected, f"{name} is present but not whole"
    print(
        f"{len(survivors)} of {KILLS} killed puts had committed; {report.orphan_blobs} orphan blobs"
    )
