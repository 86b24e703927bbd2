"""Ray beyond this machine only with Ray's TLS; a real local cluster with TLS on runs a
pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sealml import Workspace
from sealml.errors import UsageError
from sealml.pipeline.executors import remote_without_tls
from sealml.pipeline.loader import load_pipeline
from sealml.serving import tls

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adult_pipeline.py"


@pytest.mark.parametrize(
    "address,environ,refused",
    [
        (None, {}, False),
        ("auto", {}, False),
        ("local", {}, False),
        ("ray://127.0.0.1:10001", {}, False),
        ("ray://localhost:10001", {}, False),
        ("127.0.0.1:6379", {}, False),
        ("ray://10.1.2.3:10001", {}, True),
        ("10.1.2.3:6379", {}, True),
        ("ray://head.example.com:10001", {}, True),
        ("ray://10.1.2.3:10001", {"RAY_USE_TLS": "1"}, False),
        ("ray://10.1.2.3:10001", {"RAY_USE_TLS": "true"}, False),
        ("ray://10.1.2.3:10001", {"RAY_USE_TLS": "0"}, True),
        (None, {"RAY_ADDRESS": "ray://10.1.2.3:10001"}, True),
        (None, {"RAY_ADDRESS": "auto"}, False),
    ],
)
def test_remote_clusters_need_ray_tls(
    address: str | None, environ: dict[str, str], refused: bool
) -> None:
    assert remote_without_tls(address, environ) is refused


def test_a_remote_cluster_without_tls_is_refused_before_anything_runs(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    workspace.config.pipeline.ray_address = "ray://10.1.2.3:10001"
    with pytest.raises(UsageError, match="Ray's TLS is off"):
        workspace.run_pipeline(load_pipeline(EXAMPLE), "ray")
    assert workspace.ls() == []


RUN = """
import sys
from pathlib import Path
from sealml import Secret, Workspace
from sealml.crypto.kdf import FAST_PARAMS
from sealml.pipeline.loader import load_pipeline

root, example = Path(sys.argv[1]), Path(sys.argv[2])
ws = Workspace.init(root, passphrase=Secret("ray tls"), admin_password=Secret("ray-tls-pw"),
                    kdf=FAST_PARAMS)
with ws:
    report = ws.run_pipeline(load_pipeline(example), "ray")
    print(sorted({s.status for s in report.stages}), sorted(report.artifacts))
"""


@pytest.mark.slow
def test_a_pipeline_runs_on_a_ray_cluster_with_tls(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed (CI installs it)")
    from ray._private.services import get_node_ip_address

    from sealml.fsutil import write_private

    hosts = ["localhost", "127.0.0.1", get_node_ip_address()]
    ca_key, ca_cert = tls.new_ca("sealml Ray test CA", days=1)
    key, cert = tls.issue(ca_key, ca_cert, "ray-node", hosts=tuple(dict.fromkeys(hosts)),
                          client=True, server=True, days=1)  # fmt: skip
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_bytes(tls.pem(ca_cert))
    (certs / "node.pem").write_bytes(tls.pem(cert))
    write_private(certs / "node-key.pem", tls.key_pem(key))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SEALML_"))},
        "SEALML_STATE_DIR": os.environ["SEALML_STATE_DIR"],
        "RAY_USE_TLS": "1",
        "RAY_TLS_SERVER_CERT": str(certs / "node.pem"),
        "RAY_TLS_SERVER_KEY": str(certs / "node-key.pem"),
        "RAY_TLS_CA_CERT": str(certs / "ca.pem"),
    }
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ws"), str(EXAMPLE)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "['executed']" in done.stdout
    assert "'model'" in done.stdout
