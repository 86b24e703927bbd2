"""Every drill scenario, run against a copy of the workspace: detected, contained, and the
real workspace untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from sealml.monitoring.drills import SCENARIOS

from ..conftest import admin_env, reopen


def _fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "serve-tls" not in p.parts):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_is_detected_and_contained(ws_copy: Path, scenario: str) -> None:
    with reopen(ws_copy) as admin:
        _ = admin.keys
        before = admin.show_model("credit", "staging").version
        result = admin.drill(scenario, "credit", "staging")
        assert result.detected, result.detail
        assert result.contained, result.detail
        assert result.seconds >= 0 and result.control != "-"
        # The real workspace still serves the same verified model, unfrozen, unrevoked.
        described, _model = admin.resolve_model("credit", "staging")
        assert described.version == before
        assert admin.serving_state("credit", "staging")[2] is None
        assert admin.audit_verify().ok
        assert [e["action"] for e in admin.history("credit") if e["action"].startswith(
            "monitor.")] == []  # fmt: skip


def test_drill_command(ws_copy: Path, cli: Any) -> None:
    before = _fingerprint(ws_copy / ".sealml" / "blobs")
    result = cli("drill", "tampered-model", "--model", "credit@staging", "--json",
                 env=admin_env())  # fmt: skip
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["detected"] is True
    assert _fingerprint(ws_copy / ".sealml" / "blobs") == before
    unknown = cli("drill", "meteor", "--model", "credit", env=admin_env())
    assert unknown.code == 2 and "unknown scenario" in unknown.stderr
