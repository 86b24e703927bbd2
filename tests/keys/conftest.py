"""A SoftHSM2 token for the PKCS#11 tests (the real PKCS#11 interface, a software token)."""

from __future__ import annotations

import atexit
import importlib.util
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealml import Workspace
from sealml.crypto.kdf import FAST_PARAMS
from sealml.crypto.secret import Secret
from sealml.keys.pkcs11 import TokenSettings

from ..conftest import ADMIN_PASSWORD, PASSPHRASE

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "4286-1131"


# Set while collecting, before any test starts a process: a sealing process started by an
# earlier test inherits it, and SoftHSM2 reads it once, when its module is loaded.
_FOLDER = Path(tempfile.mkdtemp(prefix="sealml-softhsm-"))
atexit.register(shutil.rmtree, _FOLDER, True)
os.environ["SOFTHSM2_CONF"] = str(_FOLDER / "softhsm2.conf")


@pytest.fixture(scope="session")
def softhsm() -> Iterator[tuple[TokenSettings, Secret]]:
    """A fresh token in a private SoftHSM2 token folder, for this test process."""
    if importlib.util.find_spec("pkcs11") is None:
        pytest.skip("python-pkcs11 is not installed (pip install 'sealml[hsm]')")
    if not SOFTHSM_MODULE.is_file() or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")
    tokens = _FOLDER / "tokens"
    tokens.mkdir(exist_ok=True)
    Path(os.environ["SOFTHSM2_CONF"]).write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
    )
    label = f"sealml-{secrets.token_hex(4)}"
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN,
         "--so-pin", "so-" + PIN],
        check=True, capture_output=True,
    )  # fmt: skip
    yield TokenSettings(str(SOFTHSM_MODULE), label), Secret(PIN)


def token_workspace(root: Path, softhsm: tuple[TokenSettings, Secret]) -> Workspace:
    """A new workspace whose keys live in the test token (cheap KDF parameters)."""
    settings, pin = softhsm
    return Workspace.init(
        root, passphrase=Secret(PASSPHRASE), admin_password=Secret(ADMIN_PASSWORD),
        kdf=FAST_PARAMS, hsm=settings, hsm_pin=pin,
    )  # fmt: skip
