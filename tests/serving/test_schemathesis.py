"""Schemathesis against the served OpenAPI document: thousands of generated requests, valid
and invalid, and no server error or response outside the documented schema."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Template, live_server

HIGH = {"key_rate": 1e6, "key_burst": 10**6, "address_rate": 1e6, "address_burst": 10**6}


def _schemathesis() -> str:
    found = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(found).exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    return found


def _run(url: str, ca: Path, key: str, *extra: str) -> tuple[int, str]:
    result = subprocess.run(
        [
            _schemathesis(), "run", f"{url}/openapi.json", "-H", f"X-API-Key: {key}",
            "--checks", "all", "--tls-verify", str(ca), "--no-color", "--seed", "7",
            "--generation-database", "none", "--suppress-health-check", "all",
            "--workers", "2", *extra,
        ],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def test_generated_requests_meet_the_schema(ws_copy: Path, template: Template) -> None:
    with live_server(ws_copy, log_sample=0.0, **HIGH) as server:
        assert server.ca is not None
        code, output = _run(
            server.url, server.ca, template.keys["explain"], "--max-examples", "1000",
            "--exclude-path-regex", "^/admin",
        )  # fmt: skip
        assert code == 0, output[-6000:]
        generated = re.search(r"(\d+) generated, (\d+) passed", output)
        assert generated is not None, output[-3000:]
        assert int(generated.group(1)) >= 2000
        assert int(generated.group(1)) == int(generated.group(2))
        code, output = _run(
            server.url, server.ca, template.keys["admin"], "--max-examples", "50",
            "--include-path", "/metrics",
        )  # fmt: skip
        assert code == 0, output[-6000:]
        assert server.runtime.frozen is None
