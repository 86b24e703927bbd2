"""Input validation, hardened and signed outputs, explanations, metrics and probes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sealml.crypto.signing import VerifyingKey
from sealml.serving.signatures import HEADER, verify_body

from .conftest import GOOD, Template, live_server

PREDICT = "/v1/models/credit/predict"


def _loc(reply: Any) -> list[Any]:
    assert reply.status_code == 422, reply.text
    return list(reply.json()["detail"][0]["loc"])


def test_validation_names_the_field(ws_copy: Path, template: Template) -> None:
    key = {"x-api-key": template.keys["predict"]}
    with live_server(ws_copy, max_batch=5) as server, server.client(headers=key) as client:

        def post(instance: dict[str, Any] | None = None, **body: Any) -> Any:
            payload = body or {"instances": [instance]}
            return client.post(PREDICT, json=payload)

        for number in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
            raw = b'{"instances": [{"age": 40, "income": %s, "colour": "red"}]}' % number
            reply = client.post(PREDICT, content=raw, headers={"content-type": "application/json"})
            assert _loc(reply) == ["body", "instances", 0, "income"], number
        assert _loc(post(GOOD | {"age": "forty"}))[-1] == "age"
        assert _loc(post(GOOD | {"age": 40.5}))[-1] == "age"
        assert _loc(post(GOOD | {"age": True}))[-1] == "age"
        assert _loc(post(GOOD | {"age": 10**9}))[-1] == "age"
        assert _loc(post(GOOD | {"colour": "purple"}))[-1] == "colour"
        assert _loc(post(GOOD | {"ssn": "123-45-6789"}))[-1] == "ssn"
        assert _loc(post({k: v for k, v in GOOD.items() if k != "income"}))[-1] == "income"
        assert _loc(post(instances=[GOOD] * 6)) == ["body", "instances"]
        assert _loc(post(instances=[])) == ["body", "instances"]
        reply = client.post(
            PREDICT, content=b"{not json", headers={"content-type": "application/json"}
        )
        assert reply.status_code == 422
        assert "123-45-6789" not in post(GOOD | {"ssn": "123-45-6789"}).text  # no input echoed
        assert server.runtime.metrics.instances._value.get() == 0
        assert post(GOOD | {"age": 40.0}).status_code == 200  # 40.0 is an integer in JSON
        failures = server.runtime.metrics.validation_failures._value.get()
        assert failures >= 12


def test_oversized_bodies_are_refused(ws_copy: Path, template: Template) -> None:
    key = {"x-api-key": template.keys["predict"]}
    with live_server(ws_copy, max_body_bytes=2048) as server, server.client(headers=key) as client:
        reply = client.post(PREDICT, json={"instances": [GOOD] * 100})
        assert reply.status_code == 413

        def chunks() -> Any:
            for _ in range(20):
                yield b" " * 512

        reply = client.post(PREDICT, content=chunks(), headers={"content-type": "application/json"})
        assert reply.status_code == 413


def test_openapi_publishes_the_training_schema(ws_copy: Path, template: Template) -> None:
    with live_server(ws_copy) as server, server.client() as client:
        document = client.get("/openapi.json").json()
    instance = document["components"]["schemas"]["Instance"]
    assert instance["additionalProperties"] is False
    assert set(instance["required"]) == {"age", "income", "colour"}
    assert instance["properties"]["colour"]["enum"] == ["blue", "green", "red"]
    assert instance["properties"]["age"]["type"] == "integer"
    assert (
        instance["properties"]["age"]["minimum"] <= 18 <= instance["properties"]["age"]["maximum"]
    )
    request = document["components"]["schemas"]["PredictRequest"]
    assert request["properties"]["instances"]["maxItems"] == 1000
    assert (
        document["components"]["schemas"]["ExplainRequest"]["properties"]["instances"]["maxItems"]
        == 10
    )


def test_outputs_follow_the_policy(ws_copy: Path, template: Template) -> None:
    key = {"x-api-key": template.keys["predict"]}
    body = {"instances": [GOOD, GOOD | {"age": 20, "income": 30.0, "colour": "blue"}]}
    with live_server(ws_copy) as server, server.client(headers=key) as client:
        labels_only = client.post(PREDICT, json=body).json()
    assert set(labels_only) == {"request_id", "model", "version", "predictions"}
    assert labels_only["predictions"] == [1, 0]
    with (
        live_server(ws_copy, output="probability", round_digits=1) as server,
        server.client(headers=key) as client,
    ):
        rounded = client.post(PREDICT, json=body).json()
    assert rounded["classes"] == [0, 1]
    probabilities = np.array(rounded["probabilities"])
    assert np.allclose(probabilities, np.round(probabilities, 1))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=0.11)


def test_signed_responses(ws_copy: Path, template: Template) -> None:
    key = {"x-api-key": template.keys["predict"]}
    with live_server(ws_copy) as server, server.client(headers=key) as client:
        public = VerifyingKey.from_pem(client.get("/v1/signing-key").content)
        unsigned = client.post(PREDICT, json={"instances": [GOOD]})
        signed = client.post(PREDICT, json={"instances": [GOOD]}, headers={"x-sealml-sign": "1"})
    assert HEADER not in unsigned.headers
    header = signed.headers[HEADER]
    assert verify_body(public, signed.content, header)
    tampered = signed.content.replace(b'"predictions":[1]', b'"predictions":[0]')
    assert tampered != signed.content
    assert not verify_body(public, tampered, header)
    assert not verify_body(public, signed.content, header.replace("sig=", "sig=AA"))


def test_explain_metrics_and_probes(ws_copy: Path, template: Template) -> None:
    keys = template.keys
    with live_server(ws_copy, ood_threshold=2.0) as server, server.client() as client:
        explain = "/v1/models/credit/explain"
        body = {"instances": [GOOD]}
        assert (
            client.post(explain, json=body, headers={"x-api-key": keys["predict"]}).status_code
            == 403
        )
        reply = client.post(explain, json=body, headers={"x-api-key": keys["explain"]})
        assert reply.status_code == 200
        assert set(reply.json()["contributions"][0]) == {"age", "income", "colour"}
        far = {"instances": [GOOD | {"income": 100.0, "age": 79}]}
        assert (
            client.post(PREDICT, json=far, headers={"x-api-key": keys["predict"]}).status_code
            == 200
        )
        assert client.get("/metrics", headers={"x-api-key": keys["predict"]}).status_code == 403
        metrics = client.get("/metrics", headers={"x-api-key": keys["admin"]}).text
        assert 'sealml_model_version{model="credit"} 1.0' in metrics
        assert "sealml_ood_instances_total 1.0" in metrics
        assert 'sealml_denials_total{reason="lacks scope explain"} 1.0' in metrics
        assert "sealml_request_seconds_bucket" in metrics
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        info = client.get("/v1/models/credit", headers={"x-api-key": keys["predict"]}).json()
        assert info["inputs"] == ["age", "income", "colour"] and info["version"] == 1
