"""A workspace with a registered model, a service principal and API keys, built once and
copied per test; and a real uvicorn server on loopback serving it over TLS."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sealml import Secret, Workspace
from sealml.crypto.kdf import FAST_PARAMS
from sealml.pipeline.loader import load_pipeline
from sealml.serving.runtime import Runtime
from sealml.serving.server import Listen, running
from sealml.serving.target import Target
from sealml.serving.tls import TlsFiles, dev_tls

from ..conftest import ADMIN_PASSWORD, PASSPHRASE, reopen

SERVICE_PASSWORD = "service-password-1"

PIPELINE = """
import io
import numpy as np
import pandas as pd
from pathlib import Path
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder
from sealml.pipeline import Pipeline, Source, stage


@stage(inputs={"csv": "file"}, outputs={"raw": "dataset"})
def ingest(csv):
    return {"raw": pd.read_csv(io.BytesIO(csv))}


@stage(inputs={"raw": "dataset"}, outputs={"model": "model"})
def train(raw, c=1.0):
    encode = ColumnTransformer(
        [("c", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["colour"])],
        remainder="passthrough",
    )
    model = make_pipeline(encode, LogisticRegression(C=float(c), max_iter=500))
    model.fit(raw[["age", "income", "colour"]], raw["y"])
    return {"model": model}


pipeline = Pipeline("tiny-serve", stages=[ingest, train], sources={"csv": Source(Path("data.csv"))})
"""


def _rows() -> str:
    import numpy as np

    rng = np.random.default_rng(0)
    lines = ["age,income,colour,y"]
    for _ in range(400):
        age = int(rng.integers(18, 80))
        income = float(np.round(rng.normal(50.0, 15.0), 2))
        colour = str(rng.choice(["red", "green", "blue"]))
        label = int(income + (age - 45) * 0.5 + (10 if colour == "red" else 0) > 52)
        lines.append(f"{age},{income},{colour},{label}")
    return "\n".join(lines) + "\n"


@dataclass
class Template:
    path: Path
    keys: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def _state_dir(path: Path) -> Iterator[None]:
    saved = os.environ.get("SEALML_STATE_DIR")
    os.environ["SEALML_STATE_DIR"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SEALML_STATE_DIR", None)
        else:
            os.environ["SEALML_STATE_DIR"] = saved


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """credit v1 (staging) and v2 (registered), a service principal ``svc`` and keys."""
    root = tmp_path_factory.mktemp("serve-template")
    folder = root / "pipeline"
    folder.mkdir()
    (folder / "data.csv").write_text(_rows())
    (folder / "serve_pipeline.py").write_text(textwrap.dedent(PIPELINE))
    path = root / "ws"
    with _state_dir(root / "state"):
        ws = Workspace.init(
            path, passphrase=Secret(PASSPHRASE), admin_password=Secret(ADMIN_PASSWORD),
            kdf=FAST_PARAMS,
        )  # fmt: skip
        with ws:
            ws.add_user("svc", ["service"], password=Secret(SERVICE_PASSWORD))
            pipeline = load_pipeline(folder / "serve_pipeline.py")
            for c in (1.0, 0.05):
                model = dict(ws.run_pipeline(pipeline, "local", {"c": c}).artifacts)["model"]
                ws.register_model(model, "credit")
            ws.promote_model("credit", 1, "staging")
            keys = {
                "predict": ws.create_api_key("client", scopes=["predict"], models=["credit"])[1],
                "explain": ws.create_api_key("analyst", scopes=["predict", "explain"])[1],
                "admin": ws.create_api_key("ops", scopes=["admin"], models=["credit"])[1],
                "other": ws.create_api_key("elsewhere", scopes=["predict"], models=["fraud"])[1],
            }
            revoked_key, keys["revoked"] = ws.create_api_key("gone", scopes=["predict"])
            ws.revoke_api_key(revoked_key.id, "leaked")
    return Template(path, keys)


@pytest.fixture
def ws_copy(template: Template, tmp_path: Path) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(template.path, target)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveServer:
    """A uvicorn server in a thread of the test process, serving over TLS on loopback."""

    url: str
    runtime: Runtime
    ca: Path | None
    stop: Callable[[], None]

    def client(self, **options: Any) -> httpx.Client:
        verify: Any = ssl.create_default_context(cafile=str(self.ca)) if self.ca else False
        return httpx.Client(base_url=self.url, verify=verify, timeout=30, **options)


@contextlib.contextmanager
def live_server(
    path: Path,
    target: str = "credit@staging",
    *,
    tls: bool = True,
    client_ca: Path | None = None,
    **settings: Any,
) -> Iterator[LiveServer]:
    ws = reopen(path, "svc", SERVICE_PASSWORD)
    options = {"poll_seconds": 0.2, "port": free_port(), "log_sample": 1.0} | settings
    chosen = ws.config.serve.model_copy(update=options)
    files = None
    if tls:
        made = dev_tls(path / ".sealml" / "serve-tls", "127.0.0.1")
        files = TlsFiles(made.cert, made.key, client_ca, made.ca)
    listen = Listen("127.0.0.1", chosen.port, files, insecure=not tls)
    with (
        running(ws, Target.parse(target), chosen, insecure=not tls) as (runtime, app),
        uvicorn_thread(app, listen) as stop,
    ):
        yield LiveServer(listen.url, runtime, files.ca if files else None, stop)
    ws.close()


@contextlib.contextmanager
def uvicorn_thread(app: Any, listen: Listen) -> Iterator[Callable[[], None]]:
    """*app* served by uvicorn in a thread of the test process; yields its stop function."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, **listen.uvicorn_options()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=20)

    try:
        yield stop
    finally:
        stop()


def wait_until(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@contextlib.contextmanager
def running_process(
    command: list[str], env: dict[str, str], ready: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A sealml server process, once *ready* answers 200; stopped with SIGINT after."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                # A readiness probe only (the dev CA is made by the process); requests verify.
                if httpx.get(ready, verify=False, timeout=1).status_code == 200:  # noqa: S501
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not become ready")
            time.sleep(0.2)
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


GOOD = {"age": 40, "income": 55.5, "colour": "red"}
