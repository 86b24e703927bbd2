"""Operations on a running server: hot swap on promotion and rollback, freeze, revoked and
tampered versions, rate limits under concurrent load, extraction alerts, sealed prediction
logs, mutual TLS and plain HTTP."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from sealml import Secret
from sealml.errors import IntegrityError
from sealml.ledger import EventFilter
from sealml.pipeline import codecs
from sealml.serving import tls

from ..conftest import reopen
from .conftest import GOOD, SERVICE_PASSWORD, Template, live_server, wait_until

PREDICT = "/v1/models/credit/predict"
BODY = {"instances": [GOOD]}


def _version(client: httpx.Client, key: str) -> int | None:
    reply = client.post(PREDICT, json=BODY, headers={"x-api-key": key})
    return int(reply.json()["version"]) if reply.status_code == 200 else None


def test_promotion_and_rollback_swap_without_dropping_requests(
    ws_copy: Path, template: Template
) -> None:
    key = template.keys["predict"]
    statuses: list[int] = []
    stop = threading.Event()
    with live_server(ws_copy) as server:

        def hammer() -> None:
            # Paced below the key's rate limit (serve.key_rate, 50/s), which the polls
            # below share: a fast host would otherwise see 429s, not dropped requests.
            with server.client() as client:
                while not stop.wait(0.04):
                    reply = client.post(PREDICT, json=BODY, headers={"x-api-key": key})
                    statuses.append(reply.status_code)

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            with server.client() as client:
                assert _version(client, key) == 1
                with reopen(ws_copy) as admin:
                    admin.promote_model("credit", 2, "staging")
                assert wait_until(lambda: _version(client, key) == 2)
                with reopen(ws_copy) as admin:
                    admin.rollback_model("credit", "staging")
                assert wait_until(lambda: _version(client, key) == 1)
            assert wait_until(lambda: len(statuses) > 20, seconds=30)
        finally:
            stop.set()
            worker.join()
    assert set(statuses) == {200}


def test_freeze_and_unfreeze(ws_copy: Path, template: Template, cli: Any) -> None:
    keys = template.keys
    with live_server(ws_copy) as server, server.client() as client:
        assert _version(client, keys["predict"]) == 1
        with reopen(ws_copy) as admin:
            admin.freeze_model("credit", "incident 42: suspected poisoning")
        assert wait_until(
            lambda: (
                client.post(PREDICT, json=BODY, headers={"x-api-key": keys["predict"]}).status_code
                == 503
            )
        )
        assert client.get("/readyz").status_code == 503
        with reopen(ws_copy) as admin:
            admin.freeze_model("credit", "cleared", frozen=False)
        assert wait_until(lambda: _version(client, keys["predict"]) == 1)
        # The admin endpoint: needs the admin scope, takes effect at once, is in the ledger.
        reason = {"reason": "drill"}
        refused = client.post("/admin/freeze", json=reason, headers={"x-api-key": keys["predict"]})
        assert refused.status_code == 403
        frozen = client.post("/admin/freeze", json=reason, headers={"x-api-key": keys["admin"]})
        assert frozen.status_code == 200 and frozen.json()["frozen"] is True
        assert (
            client.post(PREDICT, json=BODY, headers={"x-api-key": keys["predict"]}).status_code
            == 503
        )
        assert (
            client.post(
                "/admin/unfreeze", json={"reason": ""}, headers={"x-api-key": keys["admin"]}
            ).status_code
            == 422
        )
        client.post("/admin/unfreeze", json=reason, headers={"x-api-key": keys["admin"]})
        assert _version(client, keys["predict"]) == 1
        # Frozen elsewhere (the CLI) before this server's next poll: the endpoint agrees.
        with reopen(ws_copy) as admin:
            admin.freeze_model("credit", "from the CLI")
        again = client.post("/admin/freeze", json=reason, headers={"x-api-key": keys["admin"]})
        assert again.status_code == 200 and again.json()["frozen"] is True
    with reopen(ws_copy) as admin:
        history = [
            e for e in admin.history("credit") if e["action"] in ("model.freeze", "model.unfreeze")
        ]
    assert [e["action"] for e in history] == ["model.freeze", "model.unfreeze"] * 2 + [
        "model.freeze"
    ]
    assert history[2]["details"]["requested_by"] == f"apikey:{keys['admin'].split('_')[1]}"


def test_the_freeze_command(ws_copy: Path, cli: Any) -> None:
    from ..conftest import admin_env

    result = cli("serve", "credit", "--freeze", env=admin_env())
    assert result.code == 2 and "--reason" in result.stderr
    result = cli("serve", "credit", "--freeze", "--reason", "incident 7", env=admin_env())
    assert result.code == 0, result.stderr
    with reopen(ws_copy) as admin:
        assert admin.serving_state("credit", "staging")[2] == "incident 7"
    result = cli("serve", "credit", "--freeze", "--reason", "again", env=admin_env())
    assert result.code == 2 and "already frozen" in result.stderr


def test_a_revoked_version_stops_being_served(ws_copy: Path, template: Template) -> None:
    key = template.keys["predict"]
    with live_server(ws_copy) as server, server.client() as client:
        assert _version(client, key) == 1
        with reopen(ws_copy) as admin:
            admin.set_model_status("credit", 1, "revoked", "trained on leaked data")
        assert wait_until(
            lambda: client.post(PREDICT, json=BODY, headers={"x-api-key": key}).status_code == 503
        )
        assert server.runtime.current is None


def test_a_server_stops_when_its_principal_may_no_longer_serve(
    ws_copy: Path, template: Template
) -> None:
    """Disabling the principal a server runs as, or withdrawing its serving role, stops
    the server at its next poll (recorded once); restoring it resumes; a new signing key
    stops it for good (it holds the old one)."""
    key = template.keys["predict"]

    def answer(client: httpx.Client) -> int:
        return client.post(PREDICT, json=BODY, headers={"x-api-key": key}).status_code

    with live_server(ws_copy, poll_seconds=3600) as server, server.client() as client:
        runtime = server.runtime
        with reopen(ws_copy) as admin:
            admin.set_user_disabled("svc", True)
        runtime.poll()
        runtime.poll()
        assert runtime.current is None and runtime.refusal == "svc was disabled"
        assert answer(client) == 503
        with reopen(ws_copy) as admin:
            admin.set_user_disabled("svc", False)
        runtime.poll()
        assert answer(client) == 200 and runtime.refusal is None
        with reopen(ws_copy) as admin:
            admin.set_user_roles("svc", ["auditor"])
        runtime.poll()
        assert answer(client) == 503
        assert runtime.refusal == "svc no longer holds model:serve, model:read"
        with reopen(ws_copy) as admin:
            admin.set_user_roles("svc", ["service"])
        runtime.poll()
        assert answer(client) == 200
        with reopen(ws_copy, "svc", SERVICE_PASSWORD) as svc:
            svc.rotate_signing_key(password=Secret(SERVICE_PASSWORD))
        runtime.poll()
        assert answer(client) == 503 and "new signing key" in str(runtime.refusal)
    with reopen(ws_copy) as admin:
        stops = admin.audit_events(EventFilter(action="serve.stop"))
    reasons = [event.fields()["details"]["error"] for event in stops]
    assert reasons == [
        "svc was disabled",
        "svc no longer holds model:serve, model:read",
        "svc has a new signing key; start again with it",
    ]


def test_a_server_follows_a_workspace_key_rotation(ws_copy: Path, template: Template) -> None:
    """API keys and the policy are attested again under the new workspace key: a running
    server takes the key up from the ledger's handover and keeps accepting them."""
    key = template.keys["predict"]
    with live_server(ws_copy, poll_seconds=3600) as server, server.client() as client:
        with reopen(ws_copy) as admin:
            admin.rotate_workspace_key()
        server.runtime.poll()
        assert server.runtime.refusal is None
        assert _version(client, key) == 1
        with reopen(ws_copy) as fresh:
            assert server.runtime.workspace.verifier == fresh.verifier


def _flip_blob(path: Path, version: int, part: str = "artifact_id") -> None:
    with reopen(path) as admin:
        described = admin.show_model("credit", version)
        with admin.db.read() as session:
            row = admin._find(session, getattr(described, part))
            blob = admin.blobs.path_of(row.blob_name)  # type: ignore[attr-defined]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))


def test_a_tampered_model_is_never_served(ws_copy: Path, template: Template) -> None:
    key = template.keys["predict"]
    with live_server(ws_copy, poll_seconds=3600) as server, server.client() as client:
        with reopen(ws_copy) as admin:
            admin.promote_model("credit", 2, "staging")
        _flip_blob(ws_copy, 2)
        server.runtime.poll()
        assert server.runtime.current is None
        reply = client.post(PREDICT, json=BODY, headers={"x-api-key": key})
        assert reply.status_code == 503
    _flip_blob(ws_copy, 1)
    with pytest.raises(IntegrityError), live_server(ws_copy, "credit@1"):
        pytest.fail("a server started on a tampered model")


def test_a_model_whose_signature_fails_is_never_served(ws_copy: Path) -> None:
    _flip_blob(ws_copy, 1, "signature_id")
    with pytest.raises(IntegrityError), live_server(ws_copy, "credit@staging"):
        pytest.fail("a server started on a model whose signature does not verify")
    with reopen(ws_copy) as admin:
        refusals = [e for e in admin.history("credit") if e["action"] == "model.load"]
    assert refusals and refusals[-1]["outcome"] == "denied"


def test_rate_limit_under_concurrent_load(ws_copy: Path, template: Template) -> None:
    key = template.keys["predict"]
    with live_server(ws_copy, key_rate=2.0, key_burst=10) as server:
        context = ssl.create_default_context(cafile=str(server.ca))

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, verify=context) as client:
                return await asyncio.gather(
                    *(
                        client.post(PREDICT, json=BODY, headers={"x-api-key": key})
                        for _ in range(40)
                    )
                )

        replies = asyncio.run(burst())
    codes = [r.status_code for r in replies]
    assert 10 <= codes.count(200) <= 14
    assert codes.count(429) == 40 - codes.count(200)
    assert all(int(r.headers["retry-after"]) >= 1 for r in replies if r.status_code == 429)


def test_extraction_alert_throttles_the_key(ws_copy: Path, template: Template) -> None:
    key = template.keys["predict"]
    rng = np.random.default_rng(5)
    with live_server(ws_copy, extraction_window=100) as server, server.client() as client:
        document = client.get("/openapi.json").json()
        bounds = document["components"]["schemas"]["Instance"]["properties"]
        age, income = (
            bounds["age"],
            bounds["income"]["anyOf"][0] if "anyOf" in bounds["income"] else bounds["income"],
        )
        for _ in range(12):
            sweep = [
                {"age": int(rng.integers(age["minimum"], age["maximum"] + 1)),
                 "income": float(rng.uniform(income["minimum"], income["maximum"])),
                 "colour": str(rng.choice(["red", "green", "blue"]))}
                for _ in range(10)
            ]  # fmt: skip
            assert (
                client.post(
                    PREDICT, json={"instances": sweep}, headers={"x-api-key": key}
                ).status_code
                == 200
            )
        principal = f"apikey:{key.split('_')[1]}"
        assert principal in server.runtime.throttled
        assert server.runtime.key_rate(principal) < server.runtime.settings.key_rate
        server.runtime.recorder.flush()
    with reopen(ws_copy) as admin, admin.db.read() as session:
        alerts = [
            e.fields()
            for e in admin.ledger.events(session, EventFilter(action="serve.extraction-alert"))
        ]
    assert len(alerts) == 1 and alerts[0]["principal"] == principal
    assert alerts[0]["details"]["signal"] == "sweep"


def test_predictions_are_logged_sealed(ws_copy: Path, template: Template) -> None:
    key = template.keys["predict"]
    with live_server(ws_copy, ledger_sample=1.0) as server, server.client() as client:
        for _ in range(3):
            client.post(PREDICT, json={"instances": [GOOD, GOOD]}, headers={"x-api-key": key})
        server.runtime.recorder.flush()
    with reopen(ws_copy) as admin:
        logs = [a for a in admin.ls() if a.annotations.get("predictions") == "credit"]
        assert len(logs) == 1 and logs[0].kind == "dataset"
        frame = codecs.decode("dataset", admin.read_bytes(logs[0].id))
        with admin.db.read() as session:
            sampled = list(admin.ledger.events(session, EventFilter(action="serve.predict")))
    assert len(frame) == 6
    assert {"input.age", "input.income", "input.colour", "prediction", "score"} <= set(
        frame.columns
    )
    assert len(sampled) == 3
    blob_text = b"".join(
        p.read_bytes() for p in (ws_copy / ".sealml" / "blobs").rglob("*") if p.is_file()
    )
    assert b"input.colour" not in blob_text  # sealed, not plaintext on disk


def test_mutual_tls(ws_copy: Path, template: Template, tmp_path: Path) -> None:
    ca_key, ca_cert = tls.new_ca("test client CA")
    client_key, client_cert = tls.issue(ca_key, ca_cert, "billing-service", client=True)
    (tmp_path / "client-ca.pem").write_bytes(tls.pem(ca_cert))
    (tmp_path / "client.pem").write_bytes(tls.pem(client_cert) + tls.key_pem(client_key))
    with live_server(ws_copy, client_ca=tmp_path / "client-ca.pem") as server:
        with server.client() as anonymous, pytest.raises(httpx.HTTPError):
            anonymous.post(PREDICT, json=BODY, headers={"x-api-key": template.keys["predict"]})
        context = ssl.create_default_context(cafile=str(server.ca))
        context.load_cert_chain(tmp_path / "client.pem")
        with httpx.Client(base_url=server.url, verify=context) as client:
            reply = client.post(PREDICT, json=BODY, headers={"x-api-key": template.keys["predict"]})
            assert reply.status_code == 200


def test_plain_http_says_so_in_every_line(
    ws_copy: Path, template: Template, capsys: pytest.CaptureFixture[str]
) -> None:
    with live_server(ws_copy, tls=False) as server, server.client() as client:
        assert server.url.startswith("http://")
        client.post(PREDICT, json=BODY, headers={"x-api-key": template.keys["predict"]})
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    assert lines and all(line["transport"] == "INSECURE plain HTTP" for line in lines)
    assert all(template.keys["predict"] not in json.dumps(line) for line in lines)


def test_serve_refuses_to_run_without_tls(ws_copy: Path, cli: Any) -> None:
    from ..conftest import admin_env

    result = cli("serve", "credit@staging", env=admin_env())
    assert result.code == 2
    assert "serving needs TLS" in result.stderr and len(result.stderr.strip().splitlines()) == 1
