"""A SoftHSM2 token for the PKCS#11 tests (the real PKCS#11 interface, a software token)."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealml.crypto.secret import Secret
from sealml.keys.pkcs11 import TokenSettings

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "4286-1131"


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TokenSettings, Secret]]:
    """A fresh token in a private SoftHSM2 token folder, for this test process."""
    if importlib.util.find_spec("pkcs11") is None:
        pytest.skip("python-pkcs11 is not installed (pip install 'sealml[hsm]')")
    if not SOFTHSM_MODULE.is_file() or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n")
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # read when the module is first loaded
    label = f"sealml-{secrets.token_hex(4)}"
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN,
         "--so-pin", "so-" + PIN],
        check=True, capture_output=True,
    )  # fmt: skip
    yield TokenSettings(str(SOFTHSM_MODULE), label), Secret(PIN)
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous
