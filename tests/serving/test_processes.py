"""``sealml serve`` as real processes: two replicas sharing one rate limit through a real
redis-server, and one server with several workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tomli_w

from ..conftest import PASSPHRASE, reopen
from .conftest import GOOD, SERVICE_PASSWORD, Template, free_port, running_process

PREDICT = "/v1/models/credit/predict"


def _env(path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SEALML_")},
        "SEALML_STATE_DIR": os.environ["SEALML_STATE_DIR"],
        "SEALML_WORKSPACE": str(path),
        "SEALML_PASSPHRASE": PASSPHRASE,
        "SEALML_USER": "svc",
        "SEALML_PASSWORD": SERVICE_PASSWORD,
    }


def _serve(path: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sealml", "serve", "credit@staging", "--port", str(port), *extra]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip(
            "redis-server is not installed (Debian package redis-server; .ci/run installs it)"
        )
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_two_replicas_share_one_limit(ws_copy: Path, template: Template, redis_url: str) -> None:
    config = tomllib.loads((ws_copy / "sealml.toml").read_text())
    config.setdefault("serve", {}).update(key_rate=1.0, key_burst=10)
    (ws_copy / "sealml.toml").write_text(tomli_w.dumps(config))
    with reopen(ws_copy) as admin:  # serving settings are in force once approved
        assert admin.serve_settings.key_rate == 50.0
        admin.approve_policy()
    ports = [free_port(), free_port()]
    env = _env(ws_copy)
    key = template.keys["predict"]
    with contextlib.ExitStack() as stack:
        for port in ports:
            stack.enter_context(
                running_process(_serve(ws_copy, port, "--insecure-http", "--redis", redis_url), env,
                         f"http://127.0.0.1:{port}/readyz")
            )  # fmt: skip

        async def burst() -> list[int]:
            async with httpx.AsyncClient() as client:
                replies = await asyncio.gather(
                    *(
                        client.post(f"http://127.0.0.1:{ports[i % 2]}{PREDICT}",
                                    json={"instances": [GOOD]}, headers={"x-api-key": key})
                        for i in range(40)
                    )
                )  # fmt: skip
                return [r.status_code for r in replies]

        started = time.monotonic()
        codes = asyncio.run(burst())
        elapsed = time.monotonic() - started
    allowed = codes.count(200)
    assert 10 <= allowed <= 10 + int(elapsed * 1.0) + 1, (allowed, elapsed)
    assert codes.count(429) == 40 - allowed
    # Each replica alone would have let 10 through: together they let ~10, not ~20.
    assert allowed < 20


def test_several_workers(ws_copy: Path, template: Template) -> None:
    port = free_port()
    command = _serve(ws_copy, port, "--dev-tls", "--workers", "2")
    with running_process(command, _env(ws_copy), f"https://127.0.0.1:{port}/readyz"):
        ca = ws_copy / ".sealml" / "serve-tls" / "ca.pem"
        import ssl

        context = ssl.create_default_context(cafile=str(ca))
        with httpx.Client(verify=context) as client:
            for _ in range(6):
                reply = client.post(
                    f"https://localhost:{port}{PREDICT}",
                    json={"instances": [GOOD]},
                    headers={"x-api-key": template.keys["predict"]},
                )
                assert reply.status_code == 200 and reply.json()["version"] == 1
