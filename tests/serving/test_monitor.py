"""``sealml monitor run`` on a served model: the sealed reference sample against the
prediction logs or a given file."""

from __future__ import annotations

import http.server
import io
import json
import ssl
import threading
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import tomli_w

from sealml.errors import NotFoundError, UsageError
from sealml.monitoring.alerts import SIGNATURE_HEADER, verify
from sealml.serving.tls import dev_tls

from ..conftest import admin_env, reopen
from .conftest import Template, _rows, free_port, live_server

PREDICT = "/v1/models/credit/predict"


def _traffic(rows: int, seed: int, income_shift: float = 0.0) -> list[dict[str, Any]]:
    frame = pd.read_csv(io.StringIO(_rows()))
    sample = frame.sample(rows, replace=True, random_state=seed)
    sample["income"] = sample["income"] + income_shift
    return sample[["age", "income", "colour"]].to_dict(orient="records")


def _write_and_approve(path: Path, config: dict[str, Any]) -> None:
    """Write *config* to sealml.toml and approve it: monitoring settings are in force only
    once an admin approved them."""
    (path / "sealml.toml").write_text(tomli_w.dumps(config))
    with reopen(path) as admin:
        admin.approve_policy()


def test_reference_sample_is_sealed_at_registration(ws_copy: Path) -> None:
    with reopen(ws_copy) as admin:
        reference = admin.reference_sample("credit", 1)
    assert list(reference.columns) == ["age", "income", "colour", "prediction"]
    assert len(reference) == 400 and set(reference["prediction"]) <= {0, 1}


def test_monitor_the_prediction_logs(ws_copy: Path, template: Template) -> None:
    key = {"x-api-key": template.keys["predict"]}
    with reopen(ws_copy) as admin:
        try:
            admin.monitor_run("credit", "staging")
            raise AssertionError("monitoring without logs should say so")
        except NotFoundError as error:
            assert "no prediction logs" in str(error)
    with live_server(ws_copy) as server:
        with server.client(headers=key) as client:
            for batch in range(4):
                instances = _traffic(100, batch)
                clipped = [i | {"income": min(max(i["income"], 10.0), 90.0)} for i in instances]
                assert client.post(PREDICT, json={"instances": clipped}).status_code == 200
        server.runtime.recorder.flush()
    with reopen(ws_copy) as admin:
        report = admin.monitor_run("credit", "staging", window=400).report
        assert (
            admin.monitor_run("credit", "staging", window=1000, within=3600).current.shape[0] == 400
        )
        try:
            admin.monitor_run("credit", "staging", within=0.000001)
            raise AssertionError("an empty time window should say so")
        except NotFoundError as error:
            assert "in the window" in str(error)
        history = [e for e in admin.history("credit") if e["action"] == "monitor.run"]
    assert report.current_rows == 400 and report.drifted == []
    assert {c.column for c in report.columns} == {"age", "income", "colour", "prediction"}
    assert history[-1]["details"]["drifted"] == []


def test_monitor_a_drifted_file(ws_copy: Path, cli: Any, tmp_path: Path) -> None:
    shifted = pd.DataFrame(_traffic(2000, 7, income_shift=15.0))
    shifted.to_csv(tmp_path / "week.csv", index=False)
    result = cli("monitor", "run", "credit@staging", "--data", str(tmp_path / "week.csv"),
                 "--json", "--html", str(tmp_path / "week.html"), env=admin_env())  # fmt: skip
    assert result.code == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["drifted"] == ["income", "prediction"]  # the model predicts on the file
    page = (tmp_path / "week.html").read_text()
    assert page.startswith("<!doctype html>") and "income (drifted)" in page
    assert page.count("data:image/png;base64,") == 2  # the drifted column and the predictions
    assert "<script" not in page
    calm = pd.DataFrame(_traffic(2000, 8))
    calm.to_csv(tmp_path / "calm.csv", index=False)
    result = cli("monitor", "run", "credit@staging", "--data", str(tmp_path / "calm.csv"),
                 env=admin_env())  # fmt: skip
    assert result.code == 0, result.stderr
    assert "drifted: none" in result.stdout
    bad = cli("monitor", "run", "credit@staging", "--data", str(tmp_path / "nope.csv"),
              env=admin_env())  # fmt: skip
    assert bad.code == 2 and "does not exist" in bad.stderr
    (tmp_path / "other.csv").write_text("x,y\n1,2\n")
    unrelated = cli("monitor", "run", "credit@staging", "--data", str(tmp_path / "other.csv"),
                    env=admin_env())  # fmt: skip
    assert unrelated.code == 2 and "no input column" in unrelated.stderr
    assert np.isfinite(report["columns"][0]["score"])


class Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[bytes, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append((body, self.headers.get(SIGNATURE_HEADER, "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_critical_drift_opens_an_incident_and_freezes(ws_copy: Path, cli: Any) -> None:
    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    secret = ws_copy / "hook.key"
    secret.write_bytes(b"w" * 32)
    secret.chmod(0o600)
    config = tomllib.loads((ws_copy / "sealml.toml").read_text())
    config["monitor"] = {
        "webhook_url": f"http://127.0.0.1:{hook.server_port}/hook",
        "webhook_secret_file": "hook.key",
        "rules": [{"name": "input-drift", "metric": "drifted_columns", "above": 0,
                   "severity": "critical", "actions": ["freeze"]}],
    }  # fmt: skip
    _write_and_approve(ws_copy, config)
    shifted = pd.DataFrame(_traffic(2000, 7, income_shift=15.0))
    try:
        with reopen(ws_copy) as admin:
            first = admin.monitor_check("credit", "staging", data=shifted)
            second = admin.monitor_check("credit", "staging", data=shifted)
            frozen = admin.serving_state("credit", "staging")[2]
    finally:
        hook.shutdown()
    assert [a.rule for a in first.alerts] == ["input-drift"] and first.incident
    assert frozen is not None and first.incident in frozen
    assert second.alerts == [] and second.suppressed == ["input-drift"] and second.incident is None
    assert len(Hook.received) == 1
    body, signature = Hook.received[0]
    assert verify(b"w" * 32, body, signature) and not verify(b"x" * 32, body, signature)
    assert json.loads(body)["drifted"] == ["income", "prediction"]
    table = cli("incident", "ls", env=admin_env())
    assert table.code == 0 and first.incident in table.stdout and "freeze ok" in table.stdout
    listed = json.loads(cli("incident", "ls", "--json", env=admin_env()).stdout)
    assert [i["id"] for i in listed] == [first.incident]
    assert listed[0]["actions"] == [{"outcome": "ok", "step": "freeze", "model": "credit"}]
    assert listed[0]["evidence"] == first.run.report_id
    assert cli("incident", "close", first.incident, "--note", "bad upstream feed fixed",
               env=admin_env()).code == 0  # fmt: skip
    again = cli("incident", "close", first.incident, "--note", "x", env=admin_env())
    assert again.code == 2 and "already closed" in again.stderr
    shown = json.loads(cli("incident", "show", first.incident, env=admin_env()).stdout)
    assert shown["closed"]["note"] == "bad upstream feed fixed"


def test_an_extraction_alert_gets_the_key_revoked(ws_copy: Path, template: Template) -> None:
    key = template.keys["predict"]
    rng = np.random.default_rng(5)
    with live_server(ws_copy, extraction_window=100) as server, server.client() as client:
        for _ in range(12):
            sweep = [
                {"age": int(rng.integers(16, 82)), "income": float(rng.uniform(5, 95)),
                 "colour": str(rng.choice(["red", "green", "blue"]))}
                for _ in range(10)
            ]  # fmt: skip
            client.post(PREDICT, json={"instances": sweep}, headers={"x-api-key": key})
        client.post(PREDICT, json={"instances": []}, headers={"x-api-key": "sml_bad"})
        client.post(PREDICT, json={"instances": [{"age": "x"}]}, headers={"x-api-key": key})
        server.runtime.recorder.flush()
    config = tomllib.loads((ws_copy / "sealml.toml").read_text())
    config["monitor"] = {"rules": [
        {"name": "extraction", "metric": "extraction_alerts", "above": 0, "severity": "critical",
         "actions": ["revoke-key"]},
        {"name": "probing", "metric": "denials", "above": 0, "severity": "warning"},
    ]}  # fmt: skip
    _write_and_approve(ws_copy, config)
    with reopen(ws_copy) as admin:
        outcome = admin.monitor_check("credit", "staging", data=pd.DataFrame(_traffic(500, 3)))
        keys = {k.id: k for k in admin.api_keys()}
        again = admin.monitor_check("credit", "staging", data=pd.DataFrame(_traffic(500, 4)))
    assert outcome.figures["extraction_alerts"] == 1 and outcome.figures["denials"] == 1
    assert outcome.figures["schema_violations"] == 1 and outcome.figures["rate_limited"] == 0
    assert {a.rule for a in outcome.alerts} == {"extraction", "probing"}
    assert keys[key.split("_")[1]].revoked_at is not None
    assert again.figures["extraction_alerts"] == 0  # counted since the previous run


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes, bool]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        secured = session.ssl is not None
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content, secured))
        return "250 OK"


def test_alerts_by_mail_over_starttls(ws_copy: Path, tmp_path: Path) -> None:
    pytest.importorskip("aiosmtpd", reason="aiosmtpd is in the test extra")
    from aiosmtpd.controller import Controller

    files = dev_tls(tmp_path / "mail-tls", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True)  # fmt: skip
    controller.start()
    config = tomllib.loads((ws_copy / "sealml.toml").read_text())
    config["monitor"] = {
        "smtp_host": "localhost", "smtp_port": port, "smtp_from": "sealml@example.com",
        "smtp_to": ["oncall@example.com"], "smtp_ca_file": str(files.ca),
        "rules": [{"name": "input-drift", "metric": "drifted_columns", "above": 0,
                   "severity": "warning"}],
    }  # fmt: skip
    _write_and_approve(ws_copy, config)
    try:
        with reopen(ws_copy) as admin:
            outcome = admin.monitor_check(
                "credit", "staging", data=pd.DataFrame(_traffic(2000, 7, income_shift=15.0))
            )
    finally:
        controller.stop()
    assert [a.rule for a in outcome.alerts] == ["input-drift"] and outcome.incident is None
    assert len(mailbox.messages) == 1
    sender, recipients, content, secured = mailbox.messages[0]
    assert secured and sender == "sealml@example.com" and recipients == ["oncall@example.com"]
    assert b"[sealml warning] credit v1: input-drift" in content and b"income" in content


def test_watch_exports_metrics(ws_copy: Path, cli: Any) -> None:
    from prometheus_client import generate_latest

    from sealml.monitoring.watch import WatchMetrics, parse_every, watch

    assert parse_every("15m") == 900 and parse_every("1d") == 86400
    for bad in ("5s", "soon", "1y"):
        with pytest.raises(UsageError):
            parse_every(bad)
    metrics = WatchMetrics()
    lines: list[str] = []
    frames = iter([pd.DataFrame(_traffic(2000, 7, income_shift=15.0)), None])
    with reopen(ws_copy) as admin:

        def check() -> Any:
            frame = next(frames)
            if frame is None:
                raise NotFoundError("no prediction logs for credit")
            return admin.monitor_check("credit", "staging", data=frame)

        runs = watch(check, metrics, "credit", 10, iterations=2, report=lines.append,
                     stop=None)  # fmt: skip
    text = generate_latest(metrics.registry).decode()
    assert runs == 2
    assert 'sealml_drifted_columns{model="credit"} 2.0' in text
    assert (
        'sealml_monitor_alerts_total{model="credit",rule="input-drift",severity="warning"} 1.0'
        in text
    )
    assert 'sealml_monitor_runs_total{model="credit",outcome="failed"} 1.0' in text
    assert 'sealml_drift_score{column="income"' in text
    assert lines[0].startswith("credit: drifted income, prediction") and "failed" in lines[1]
    result = cli("monitor", "watch", "credit@staging", "--every", "1m", "--count", "1",
                 "--window", "1h", env=admin_env())  # fmt: skip
    assert result.code == 0 and "run failed: no prediction logs" in result.stdout


def test_late_labels_measure_accuracy(ws_copy: Path, template: Template, cli: Any,
                                      tmp_path: Path) -> None:  # fmt: skip
    key = {"x-api-key": template.keys["predict"]}
    with live_server(ws_copy) as server, server.client(headers=key) as client:
        replies = [
            client.post(PREDICT, json={"instances": [i]}).json()
            for i in _traffic(40, 1)
            if 10 <= i["income"] <= 90
        ]
        server.runtime.recorder.flush()
    wrong = pd.DataFrame({"request_id": [r["request_id"] for r in replies],
                          "label": [1 - r["predictions"][0] for r in replies]})  # fmt: skip
    wrong.to_csv(tmp_path / "labels.csv", index=False)
    added = cli("monitor", "labels", "credit", str(tmp_path / "labels.csv"), env=admin_env())
    assert added.code == 0 and f"accuracy 0.000 on {len(replies)}" in added.stdout
    (tmp_path / "bad.csv").write_text("id,truth\n1,0\n")
    bad = cli("monitor", "labels", "credit", str(tmp_path / "bad.csv"), env=admin_env())
    assert bad.code == 2 and "request_id" in bad.stderr
    config = tomllib.loads((ws_copy / "sealml.toml").read_text())
    config["monitor"] = {"rules": [{"name": "accuracy", "metric": "accuracy", "below": 0.6,
                                    "severity": "warning"}]}  # fmt: skip
    _write_and_approve(ws_copy, config)
    with reopen(ws_copy) as admin:
        outcome = admin.monitor_check("credit", "staging", window=len(replies))
    assert outcome.figures["accuracy"] == 0.0
    assert [(a.rule, a.threshold) for a in outcome.alerts] == [("accuracy", 0.6)]
