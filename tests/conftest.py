"""Shared fixtures: an isolated environment and ready workspaces with real keys."""

from __future__ import annotations

import os

# Tests run two to a machine (pytest -n auto): OpenMP's spinning waits make two processes
# that both fit models on all cores slow each other down by orders of magnitude.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib
import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sealml import Secret, Workspace
from sealml.crypto.kdf import FAST_PARAMS

PASSPHRASE = "correct horse battery staple"
ADMIN_PASSWORD = "admin-password-1"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the developer's sealml environment or state folder."""
    for name in list(os.environ):
        if name.startswith("SEALML_"):
            monkeypatch.delenv(name)
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("SEALML_STATE_DIR", str(state))
    return state


@pytest.fixture
def ws_path(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@pytest.fixture
def workspace(ws_path: Path) -> Iterator[Workspace]:
    """A fresh workspace acting as its admin (cheap KDF parameters for speed)."""
    ws = Workspace.init(
        ws_path,
        passphrase=Secret(PASSPHRASE),
        admin_password=Secret(ADMIN_PASSWORD),
        kdf=FAST_PARAMS,
    )
    yield ws
    ws.close()


def reopen(path: Path, user: str = "admin", password: str = ADMIN_PASSWORD) -> Workspace:
    ws = Workspace.open(path, passphrase=Secret(PASSPHRASE))
    ws.login(user, Secret(password))
    return ws


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(ws_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """Run the real `sealml` entry point in-process, as a script would, with env vars."""
    from sealml.cli.main import run

    def invoke(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> Result:
        with monkeypatch.context() as patch:
            patch.setenv("SEALML_WORKSPACE", str(ws_path))
            for key, value in (env or {}).items():
                if value is None:
                    patch.delenv(key, raising=False)
                else:
                    patch.setenv(key, value)
            patch.setattr(sys, "argv", ["sealml", *args])
            patch.setattr(sys, "stdin", io.StringIO(stdin))
            out, err = io.StringIO(), io.StringIO()
            patch.setattr(sys, "stdout", out)
            patch.setattr(sys, "stderr", err)
            code = 0
            with contextlib.suppress(SystemExit):
                try:
                    run()
                except SystemExit as exit_:
                    code = exit_.code if isinstance(exit_.code, int) else 1
                    raise
            return Result(code, out.getvalue(), err.getvalue())

    return invoke


def admin_env(**extra: str) -> dict[str, str]:
    return {
        "SEALML_PASSPHRASE": PASSPHRASE,
        "SEALML_USER": "admin",
        "SEALML_PASSWORD": ADMIN_PASSWORD,
        **extra,
    }


PIPELINE = """
from pathlib import Path
import os
from sealml.pipeline import Pipeline, Source, stage

MARKERS = Path(os.environ.get("SEALML_TEST_MARKERS", "/nonexistent"))


def mark(name):
    if MARKERS.is_dir():
        (MARKERS / name).write_text("ran")


@stage(inputs={"raw": "file"}, outputs={"numbers": "report"})
def parse(raw, offset=0):
    mark("parse")
    return {"numbers": {"values": [int(x) + offset for x in raw.split()]}}


@stage(inputs={"numbers": "report"}, outputs={"total": "report"})
def total(numbers, scale=1):
    mark("total")
    return {"total": {"sum": sum(numbers["values"]) * scale}}


@stage(inputs={"total": "report"}, outputs={"summary": "file"})
def summarise(total, label="sum"):
    mark("summarise")
    return {"summary": f"{label}={total['sum']}"}


pipeline = Pipeline(
    "numbers",
    stages=[parse, total, summarise],
    sources={"raw": Source(Path("numbers.txt"))},
)
"""


@pytest.fixture
def small_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "numbers.txt").write_text("1 2 3 4\n")
    path = folder / "numbers_pipeline.py"
    path.write_text(textwrap.dedent(PIPELINE))
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("SEALML_TEST_MARKERS", str(markers))
    return path


def reference_verify(
    model: Path, signature: Path, public_key: Path
) -> subprocess.CompletedProcess[str]:
    """`model_signing verify key`, the OpenSSF reference tool, on a signed model."""
    return subprocess.run(
        [sys.executable, "-m", "model_signing", "verify", "key", str(model),
         "--signature", str(signature), "--public_key", str(public_key)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
