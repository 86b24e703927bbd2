"""``sealml ui`` as a real process: dev TLS, sign-in through the TLS chain it made."""

from __future__ import annotations

import os
import re
import ssl
import sys
from pathlib import Path

import httpx

from ..conftest import PASSPHRASE
from ..serving.conftest import free_port, running_process
from .conftest import PASSWORDS


def test_sealml_ui_serves_over_its_dev_tls(ws_copy: Path, people: str) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SEALML_")},
        "SEALML_STATE_DIR": os.environ["SEALML_STATE_DIR"],
        "SEALML_WORKSPACE": str(ws_copy),
        "SEALML_PASSPHRASE": PASSPHRASE,
    }
    command = [sys.executable, "-m", "sealml", "ui", "--dev-tls", "--port", str(port)]
    url = f"https://127.0.0.1:{port}"
    with running_process(command, env, f"{url}/login"):
        ca = ws_copy / ".sealml" / "serve-tls" / "ca.pem"
        verify = ssl.create_default_context(cafile=str(ca))
        with httpx.Client(base_url=url, verify=verify, timeout=30) as client:
            token = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/login").text)
            assert token is not None
            form = {"csrf": token.group(1), "user": "admin", "password": PASSWORDS["admin"]}
            assert client.post("/login", data=form).status_code == 303
            assert "The ledger verifies" in client.get("/audit/verify").text
            card = client.get("/models/credit/2/card")  # needs the unlocked keystore
            assert card.status_code == 200 and "credit" in card.text
