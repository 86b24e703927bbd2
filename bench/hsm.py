"""Data-key wrapping in a PKCS#11 token (SoftHSM2) next to the local keystore.

Every sealed artifact wraps one data key when it is sealed and unwraps it each time it is
read, so wrapping sits on the path of every put and get. The bench wraps and unwraps
N data keys with each provider, one at a time (as sealml does), and seals and reads back a
small artifact in a workspace of each kind. Anchor: the local keystore's AES-256-GCM in
the same process. Prints one JSON object.

Usage: python bench/hsm.py [--keys 2000]   (needs: apt-get install softhsm2;
pip install 'sealml[hsm]')
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "bench-pin-1234"


def _token(folder: Path) -> str:
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label = "sealml-bench"
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN,
         "--so-pin", "so-" + PIN],
        check=True, capture_output=True,
    )  # fmt: skip
    return label


def _per_second(provider: Any, count: int) -> dict[str, float]:
    from sealml.keys.provider import dek_context

    deks = [os.urandom(32) for _ in range(count)]
    start = time.perf_counter()
    wrapped = [provider.wrap(dek, dek_context(str(i))) for i, dek in enumerate(deks)]
    wrap_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for i, item in enumerate(wrapped):
        provider.unwrap(item, dek_context(str(i)))
    unwrap_seconds = time.perf_counter() - start
    return {
        "wrap_per_second": round(count / wrap_seconds),
        "unwrap_per_second": round(count / unwrap_seconds),
    }


def _put_get(workspace: Any, folder: Path, rounds: int = 50) -> dict[str, float]:
    payload = os.urandom(4096)
    start = time.perf_counter()
    ids = [workspace.put(io.BytesIO(payload), "dataset", f"row-{i}").id for i in range(rounds)]
    put = (time.perf_counter() - start) / rounds
    start = time.perf_counter()
    for i, artifact in enumerate(ids):
        workspace.get(artifact, folder / f"out-{i}")
    get = (time.perf_counter() - start) / rounds
    return {"put_4KiB_ms": round(put * 1000, 2), "get_4KiB_ms": round(get * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=2000)
    args = parser.parse_args()

    from sealml import Secret, Workspace
    from sealml.crypto.kdf import FAST_PARAMS
    from sealml.keys.local import LocalKeystore
    from sealml.keys.pkcs11 import Pkcs11Provider, TokenSettings

    with tempfile.TemporaryDirectory(prefix="sealml-bench-hsm-") as scratch:
        folder = Path(scratch)
        os.environ["SEALML_STATE_DIR"] = str(folder / "state")
        settings = TokenSettings(MODULE, _token(folder))
        pin = Secret(PIN)
        token = Pkcs11Provider.initialise(settings, pin, uuid.uuid4().hex)
        local = LocalKeystore.create(
            folder / "keystore.json", "bench", Secret("p" * 16), FAST_PARAMS
        )
        report: dict[str, Any] = {
            "keys": args.keys,
            "pkcs11_softhsm2": _per_second(token, args.keys),
            "anchor_local_keystore": _per_second(local, args.keys),
        }
        token.close()
        for kind, options in (("local", {}), ("pkcs11", {"hsm": settings, "hsm_pin": pin})):
            workspace = Workspace.init(
                folder / f"ws-{kind}",
                passphrase=Secret("p" * 16),
                admin_password=Secret("a" * 16),
                kdf=FAST_PARAMS,
                **options,
            )
            (folder / kind).mkdir()
            report[f"workspace_{kind}"] = _put_get(workspace, folder / kind)
            workspace.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
