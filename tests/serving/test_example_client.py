"""examples/score_client.py against a real server: signed answers are accepted, and an
answer checked against another pinned key is refused."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sealml.crypto.signing import SigningKey

from ..conftest import reopen
from .conftest import GOOD, Template, live_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "score_client.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("score_client", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_client_accepts_only_answers_signed_by_the_pinned_key(
    ws_copy: Path, template: Template, tmp_path: Path
) -> None:
    client = _example()
    with reopen(ws_copy) as admin:
        pinned = admin.public_key("svc").public_key
    with live_server(ws_copy) as server:
        assert server.ca is not None
        answer = client.score(
            server.url, "credit", template.keys["predict"], [GOOD, GOOD],
            ca=server.ca, server_key=pinned,
        )  # fmt: skip
        assert len(answer["predictions"]) == 2
        stranger = SigningKey.generate("ecdsa-p256").public_key
        with pytest.raises(client.UnsignedAnswerError, match="refusing"):
            client.score(
                server.url, "credit", template.keys["predict"], [GOOD],
                ca=server.ca, server_key=stranger,
            )  # fmt: skip
        # The command line, as the docstring shows it.
        rows = tmp_path / "rows.jsonl"
        rows.write_text(json.dumps(GOOD) + "\n")
        key_file = tmp_path / "server-key.pem"
        key_file.write_text(pinned.pem())
        run = subprocess.run(
            [sys.executable, str(EXAMPLE), server.url, "credit", str(rows),
             "--ca", str(server.ca), "--server-key", str(key_file)],
            env={"SEALML_API_KEY": template.keys["predict"], "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert len(json.loads(run.stdout)["predictions"]) == 1
