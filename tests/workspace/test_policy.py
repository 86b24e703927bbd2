"""Roles come from the signed, approved policy; editing sealml.toml or the database grants
nothing until an administrator approves."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sealml import Secret, Workspace
from sealml.errors import IntegrityError, PermissionDeniedError, UsageError

from ..conftest import admin_env, reopen


def grant_in_config(root: Path, role: str, permission: str) -> None:
    path = root / "sealml.toml"
    text = path.read_text()
    marker = f"{role} = ["
    assert marker in text
    path.write_text(text.replace(marker, f'{marker}"{permission}", ', 1))


def test_config_edit_grants_nothing_until_approved(workspace: Workspace, tmp_path: Path) -> None:
    workspace.put(io.BytesIO(b"rows"), "dataset", "rows")
    workspace.add_user("dana", ["data-scientist"], password=Secret("dana-password"))
    workspace.close()
    grant_in_config(workspace.root, "data-scientist", "keys:admin")
    dana = reopen(workspace.root, "dana", "dana-password")
    assert dana.policy_pending
    with pytest.raises(PermissionDeniedError):
        dana.rotate_keys()
    with pytest.raises(PermissionDeniedError):
        dana.approve_policy()
    dana.close()
    admin = reopen(workspace.root)
    approved = admin.approve_policy()
    assert "keys:admin" in approved.roles["data-scientist"] and not admin.policy_pending
    admin.close()
    dana = reopen(workspace.root, "dana", "dana-password")
    assert dana.rotate_keys()["kek"] == "local:2"


def test_tampered_policy_row_is_refused(workspace: Workspace) -> None:
    workspace.close()
    connection = sqlite3.connect(workspace.root / ".sealml" / "sealml.db")
    with connection:
        connection.execute(
            "UPDATE workspace_meta SET value = replace(value, '\"dataset:read\"', '\"*\"') "
            "WHERE key = 'policy'"
        )
    connection.close()
    with pytest.raises(IntegrityError, match="policy"):
        reopen(workspace.root)


def test_approving_away_your_own_admin_is_refused(workspace: Workspace) -> None:
    path = workspace.root / "sealml.toml"
    path.write_text(
        path.read_text().replace('admin = [\n    "*",\n]', 'admin = [\n    "dataset:read",\n]')
    )
    workspace.close()
    admin = reopen(workspace.root)
    assert admin.policy_pending
    with pytest.raises(UsageError, match="policy:admin"):
        admin.approve_policy()


def test_cli_warns_and_approves(cli: Any, ws_path: Path) -> None:
    assert cli("init", "--insecure-fast-kdf", env=admin_env()).code == 0
    grant_in_config(ws_path, "auditor", "dataset:read")
    shown = cli("policy", "show", env=admin_env())
    assert shown.code == 0 and "warning" in shown.stderr
    assert cli("policy", "approve", env=admin_env()).code == 0
    after = cli("policy", "show", "--json", env=admin_env())
    assert after.stderr == "" and "dataset:read" in after.stdout


def test_cli_warns_of_proposed_registry_rules_too(cli: Any, ws_path: Path) -> None:
    assert cli("init", "--insecure-fast-kdf", env=admin_env()).code == 0
    path = ws_path / "sealml.toml"
    path.write_text(path.read_text() + "\n[registry.gates.staging]\nrequire_evaluation = true\n")
    shown = cli("policy", "show", env=admin_env())
    assert shown.code == 0 and "registry rules" in shown.stderr
    assert cli("policy", "approve", env=admin_env()).code == 0
    after = cli("policy", "show", env=admin_env())
    assert after.stderr == "" and "require_evaluation': True" in after.stdout
    assert "serving: answers labels only" in after.stdout
    assert "monitoring: alert rules input-drift; alerts go to the ledger" in after.stdout
    path.write_text(path.read_text().replace('output = "label"', 'output = "probability"'))
    shown = cli("policy", "show", "--json", env=admin_env())
    assert "serving or monitoring settings" in shown.stderr
    assert json.loads(shown.stdout)["serve"]["output"] == "label"
    assert cli("policy", "approve", env=admin_env()).code == 0
    after = cli("policy", "show", env=admin_env())
    assert "answers probabilities rounded to 2 digits" in after.stdout


def test_an_older_approved_policy_copied_back_is_refused(workspace: Workspace) -> None:
    """The policy from before a grant was approved is validly signed, but it is not the
    one the ledger's checkpoints anchor: a database edit cannot undo an approval."""
    root = workspace.root
    database = root / ".sealml" / "sealml.db"

    def policy_rows() -> list[tuple[str, str]]:
        connection = sqlite3.connect(database)
        rows = connection.execute(
            "SELECT key, value FROM workspace_meta WHERE key IN ('policy', 'policy_signature')"
        ).fetchall()
        connection.close()
        return rows

    before = policy_rows()
    grant_in_config(root, "data-scientist", "keys:admin")
    workspace.approve_policy()
    assert policy_rows() != before
    with reopen(root) as watcher:  # a long-running process, such as a server
        connection = sqlite3.connect(database)
        with connection:
            connection.executemany(
                "UPDATE workspace_meta SET value = ? WHERE key = ?",
                [(value, key) for key, value in before],
            )
        connection.close()
        with pytest.raises(IntegrityError, match="policy is not the one"):
            watcher.reload_policy()
    with pytest.raises(IntegrityError, match="policy is not the one"):
        reopen(root)


def test_serving_settings_take_effect_only_once_approved(workspace: Workspace) -> None:
    """Whoever can edit sealml.toml cannot make a server answer probabilities, trust
    another token issuer or drop its limits: the server runs on the approved settings."""
    path = workspace.root / "sealml.toml"
    loosened = (
        path.read_text()
        .replace('output = "label"', 'output = "probability"')
        .replace("key_rate = 50.0", "key_rate = 100000.0")
    )
    path.write_text(loosened + '\n[serve.jwt]\nissuer = "https://attacker.example/"\n')
    workspace.close()
    admin = reopen(workspace.root)
    assert admin.config.serve.output == "probability" and admin.policy_pending
    served = admin.serve_settings
    assert (served.output, served.key_rate, served.jwt) == ("label", 50.0, None)
    admin.approve_policy()
    assert not admin.policy_pending
    admin.close()
    admin = reopen(workspace.root)
    served = admin.serve_settings
    assert served.output == "probability" and served.key_rate == 100000.0
    assert served.jwt is not None and served.jwt.issuer == "https://attacker.example/"
    admin.close()


def test_a_policy_approved_before_serving_settings_approves_the_defaults(
    workspace: Workspace,
) -> None:
    """A record without serving or monitoring settings (approved by an earlier sealml)
    stands for their defaults; anything else in sealml.toml waits for an approval."""
    from sealml.access.approval import _parse, roles_record
    from sealml.config import MonitorSection, ServeSection
    from sealml.crypto.canonical import canonical_json

    config = workspace.config
    legacy = {
        "v": 1,
        "roles": roles_record(config.access.roles),
        "registry": config.registry.model_dump(),
        "approved_by": "init",
        "approved_at": "2026-01-01T00:00:00Z",
    }
    approved = _parse(canonical_json(legacy))
    assert approved.serve == ServeSection() and approved.monitor == MonitorSection()
    assert not approved.differs_from(config)
    probabilities = config.model_copy(update={"serve": ServeSection(output="probability")})
    assert approved.differs_from(probabilities)
    silenced = config.model_copy(update={"monitor": MonitorSection(rules=[])})
    assert approved.differs_from(silenced)


def test_alert_rules_take_effect_only_once_approved(workspace: Workspace) -> None:
    """Deleting the alert rule that freezes a model, or sending alerts elsewhere, by an
    edit of sealml.toml changes nothing until an admin approves it."""
    default_rules = workspace.monitor_settings.rules
    assert [rule.name for rule in default_rules] == ["input-drift"]
    path = workspace.root / "sealml.toml"
    text = path.read_text()
    start = text.index("[[monitor.rules]]")
    path.write_text(text[:start] + 'rules = []\nwebhook_url = "https://collector.example/hook"\n')
    workspace.close()
    admin = reopen(workspace.root)
    assert admin.config.monitor.rules == [] and admin.policy_pending
    assert admin.monitor_settings.rules == default_rules
    assert admin.monitor_settings.webhook_url is None
    admin.approve_policy()
    assert admin.monitor_settings.rules == [] and not admin.policy_pending
    admin.close()
