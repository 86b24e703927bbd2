"""The dashboard over a copy of the serving tests' workspace (a registered model ``credit``),
served by a real uvicorn over TLS on loopback, with people of several roles."""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from sealml import Secret, Workspace
from sealml.access import totp
from sealml.serving.server import Listen
from sealml.serving.tls import TlsFiles, dev_tls
from sealml.ui.app import UiSettings, create_dashboard
from sealml.ui.server import allowed_hosts

from ..conftest import PASSPHRASE, reopen
from ..serving.conftest import free_port, template, uvicorn_thread, ws_copy

__all__ = ["template", "ws_copy"]

PASSWORDS = {
    "admin": "admin-password-1",
    "ada": "scientist-password-1",
    "aud": "auditor-password-1",
    "otp": "totp-user-password-1",
}
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class Dashboard:
    url: str
    ca: Path
    path: Path
    workspace: Workspace
    totp_secret: str

    def client(self, **options: Any) -> httpx.Client:
        verify = ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(base_url=self.url, verify=verify, timeout=30, **options)

    def sign_in(self, client: httpx.Client, user: str, password: str | None = None,
                code: str = "") -> httpx.Response:  # fmt: skip
        """Fetch the form (for its CSRF token) and post it, as a browser does."""
        form = client.get("/login")
        token = CSRF.search(form.text)
        assert token is not None, form.text
        return client.post(
            "/login",
            data={
                "csrf": token.group(1),
                "user": user,
                "password": PASSWORDS.get(user, "") if password is None else password,
                "code": code,
            },
        )

    @contextlib.contextmanager
    def signed_in(self, user: str, code: str = "") -> Iterator[httpx.Client]:
        with self.client() as client:
            response = self.sign_in(client, user, code=code)
            assert response.status_code == 303, response.text
            yield client


@pytest.fixture
def people(ws_copy: Path) -> str:
    """ada (data-scientist), aud (auditor) and otp (ml-engineer with TOTP); returns otp's
    TOTP secret."""
    with reopen(ws_copy) as ws:
        ws.add_user("ada", ["data-scientist"], password=Secret(PASSWORDS["ada"]))
        ws.add_user("aud", ["auditor"], password=Secret(PASSWORDS["aud"]))
        ws.add_user("otp", ["ml-engineer"], password=Secret(PASSWORDS["otp"]))
    with reopen(ws_copy, "otp", PASSWORDS["otp"]) as ws:
        return ws.totp_enroll().secret


@contextlib.contextmanager
def running_dashboard(
    path: Path, secret: str, *, tls: bool = True, **settings: Any
) -> Iterator[Dashboard]:
    ws = Workspace.open(path, passphrase=Secret(PASSPHRASE))
    _ = ws.keys  # unlocked, as `sealml ui` does with the passphrase
    made = dev_tls(path / ".sealml" / "serve-tls", "127.0.0.1")
    files = TlsFiles(made.cert, made.key, None, made.ca) if tls else None
    listen = Listen("127.0.0.1", free_port(), files, insecure=not tls)
    chosen = replace(UiSettings(secure=tls, allowed_hosts=allowed_hosts("127.0.0.1")), **settings)
    app = create_dashboard(ws, chosen)
    assert made.ca is not None
    with ws, uvicorn_thread(app, listen):
        yield Dashboard(listen.url, made.ca, path, ws, secret)


@pytest.fixture
def dashboard(ws_copy: Path, people: str) -> Iterator[Dashboard]:
    with running_dashboard(ws_copy, people) as running:
        yield running


def current_code(secret: str) -> str:
    return totp.current_code(secret)
