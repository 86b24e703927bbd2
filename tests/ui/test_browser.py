"""The dashboard in a real browser (headless Chromium over the DevTools protocol), on the
workspace `sealml demo` leaves: the pages must work under their own Content Security
Policy, the session cookie must be out of scripts' reach, and the model card's plots and
styles must render inside its sandbox."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from sealml import Secret, Workspace
from sealml.serving.server import Listen
from sealml.serving.tls import TlsFiles, dev_tls
from sealml.ui.app import UiSettings, create_dashboard
from sealml.ui.server import allowed_hosts

from ..serving.conftest import free_port, uvicorn_thread

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")
BROWSER = next((found for name in BROWSERS if (found := shutil.which(name))), None)

pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="needs Chromium (apt-get install chromium-headless-shell)"
)


@dataclass
class Cdp:
    """A DevTools protocol connection to one page (flattened session)."""

    socket: Any
    session: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == number:
                assert "error" not in reply, reply
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def wait_for(self, method: str, seconds: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for index, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(index)
            with contextlib.suppress(TimeoutError):
                self.events.append(json.loads(self.socket.recv(timeout=1)))
        raise AssertionError(f"no {method} within {seconds} s")

    def open(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def value(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def complaints(self) -> list[str]:
        """What the browser logged as errors or policy violations since the last page."""
        found = []
        for event in self.events:
            if event.get("method") == "Log.entryAdded":
                entry = event["params"]["entry"]
                if entry["level"] in ("error", "warning"):
                    found.append(entry["text"])
        return found


@pytest.fixture(scope="module")
def demo_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The demo's workspace served by the dashboard; yields its URL and admin password."""
    from sealml.demo import run_steps

    base = tmp_path_factory.mktemp("demo")
    run_steps(base, Console(file=io.StringIO()), keep_credentials=True)
    root = base / "workspace"
    settings = dict(
        line.split("=", 1)
        for line in (root / "demo-credentials.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    secrets = {key: shlex.split(value)[0] for key, value in settings.items()}
    workspace = Workspace.open(root, passphrase=Secret(secrets["SEALML_PASSPHRASE"]))
    _ = workspace.keys
    made = dev_tls(root / ".sealml" / "serve-tls", "127.0.0.1")
    listen = Listen("127.0.0.1", free_port(), TlsFiles(made.cert, made.key))
    app = create_dashboard(
        workspace, UiSettings(secure=True, allowed_hosts=allowed_hosts("127.0.0.1"))
    )
    with workspace, uvicorn_thread(app, listen):
        yield listen.url, secrets["SEALML_PASSWORD"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Cdp]:
    from websockets.sync.client import connect

    profile = tmp_path / "profile"
    assert BROWSER is not None
    command = [
        BROWSER,
        "--headless",
        "--no-sandbox",  # tests may run as root, where Chromium's own sandbox cannot start
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        # The dev CA is not in the browser's trust store; TLS verification itself is
        # tested with real clients elsewhere. The page is still a secure context.
        "--ignore-certificate-errors",
        "about:blank",
    ]
    # A group of its own: the launcher may be a script that leaves the browser behind.
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        marker = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (marker.exists() and len(marker.read_text().splitlines()) >= 2):
            assert time.monotonic() < deadline and process.poll() is None, "no browser"
            time.sleep(0.1)
        port, path = marker.read_text().splitlines()[:2]
        with connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as socket:
            cdp = Cdp(socket)
            target = cdp.send("Target.createTarget", url="about:blank")["targetId"]
            cdp.session = cdp.send("Target.attachToTarget", targetId=target, flatten=True)[
                "sessionId"
            ]
            for domain in ("Page", "Log", "Runtime"):
                cdp.send(f"{domain}.enable")
            yield cdp
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_pages_work_under_their_policy_in_a_real_browser(
    demo_dashboard: tuple[str, str], browser: Cdp
) -> None:
    url, password = demo_dashboard
    browser.open(f"{url}/login")
    assert browser.value("document.querySelector('h1').textContent") == "Sign in"
    filled = json.dumps({"user": "admin", "password": password})
    browser.send(
        "Runtime.evaluate",
        expression=f"""(() => {{ const v = {filled};
            document.querySelector('[name=user]').value = v.user;
            document.querySelector('[name=password]').value = v.password;
            document.querySelector('form.login').submit(); }})()""",
    )
    browser.wait_for("Page.loadEventFired")
    assert browser.value("location.pathname") == "/"
    assert browser.value("document.querySelector('h1').textContent") == "Overview"
    # The stylesheet loaded under style-src 'self'; the session cookie is HttpOnly.
    header = "getComputedStyle(document.querySelector('header')).backgroundColor"
    assert browser.value(header) == "rgb(29, 43, 54)"
    assert browser.value("document.cookie") == ""
    assert "adult-income" in browser.value("document.body.innerText")
    assert browser.complaints() == []

    browser.open(f"{url}/models/adult-income")
    text = browser.value("document.body.innerText")
    assert "production" in text and "Gates for v1" in text
    assert browser.complaints() == []

    browser.open(f"{url}/models/adult-income/1/card")
    # Inline styles and data: images are allowed in the card's sandbox, scripts are not.
    assert browser.value("document.images.length") >= 2
    widths = browser.value("Array.from(document.images).map(i => i.naturalWidth)")
    assert all(width > 0 for width in widths)
    assert browser.value("getComputedStyle(document.body).maxWidth") == "960px"
    assert browser.complaints() == []

    browser.open(f"{url}/audit")
    assert "ui.sign-in" in browser.value("document.body.innerText")
    assert browser.complaints() == []
