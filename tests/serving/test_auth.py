"""Authentication and authorisation on a real server: API keys and JWTs. Every refusal is
401 or 403, nothing is predicted, and the refusals reach the ledger."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sealml.config import JwtSection
from sealml.ledger import EventFilter

from ..conftest import reopen
from .conftest import GOOD, Template, live_server, wait_until

PREDICT = "/v1/models/credit/predict"
ISSUER = "https://issuer.example"
BODY = {"instances": [GOOD]}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": "sealml", "sub": "svc-billing", "iat": now,
            "exp": now + 300, "scope": "predict"} | changes  # fmt: skip


@pytest.fixture
def issuer(tmp_path: Path) -> tuple[Any, JwtSection]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    return key, JwtSection(issuer=ISSUER, jwks_file=str(jwks), algorithms=["RS256"])


def _token(key: Any, **changes: Any) -> str:
    return jwt.encode(_claims(**changes), key, algorithm="RS256", headers={"kid": "k1"})


def _predicted(server: Any) -> float:
    return float(server.runtime.metrics.instances._value.get())


def test_api_keys(ws_copy: Path, template: Template) -> None:
    keys = template.keys
    good = keys["predict"]
    key_id = good.split("_")[1]
    wrong_secret = f"sml_{key_id}_{'A' * 43}"
    with reopen(ws_copy) as admin:
        _, expiring = admin.create_api_key("short", scopes=["predict"], expires_at=_soon(1.0))
    with live_server(ws_copy) as server, server.client() as client:
        cases = {
            "none": ({}, 401),
            "malformed": ({"x-api-key": "not-a-key"}, 401),
            "wrong secret": ({"x-api-key": wrong_secret}, 401),
            "unknown id": ({"x-api-key": f"sml_{'0' * 12}_{'A' * 43}"}, 401),
            "revoked": ({"x-api-key": keys["revoked"]}, 401),
            "other model": ({"x-api-key": keys["other"]}, 403),
            "missing scope": ({"x-api-key": keys["admin"]}, 403),
            "two credentials": ({"x-api-key": good, "authorization": f"Bearer {good}"}, 401),
            "basic auth": ({"authorization": "Basic YWRtaW46YWRtaW4="}, 401),
        }
        for name, (headers, status) in cases.items():
            reply = client.post(PREDICT, json=BODY, headers=headers)
            assert reply.status_code == status, name
            assert "predictions" not in reply.json(), name
            if status == 401:
                assert reply.headers["www-authenticate"] == "Bearer"
        assert _predicted(server) == 0
        time.sleep(1.1)  # the short key is now past its expiry
        assert client.post(PREDICT, json=BODY, headers={"x-api-key": expiring}).status_code == 401
        assert _predicted(server) == 0
        ok = client.post(PREDICT, json=BODY, headers={"authorization": f"Bearer {good}"})
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
        assert _predicted(server) == 1
        server.runtime.recorder.flush()
    with reopen(ws_copy) as admin, admin.db.read() as session:
        denied = [
            e.fields()
            for e in admin.ledger.events(session, EventFilter(action="serve.predict"))
            if e.fields()["outcome"] == "denied"
        ]
    reasons = {e["details"]["reason"] for e in denied}
    assert {"no credentials", "api key revoked", "api key wrong secret", "api key expired",
            "other model", "lacks scope predict", "ambiguous credentials"} <= reasons  # fmt: skip
    assert all(template.keys["predict"] not in json.dumps(e) for e in denied)


def test_a_revoked_key_is_refused_by_a_running_server(ws_copy: Path, template: Template) -> None:
    key = template.keys["predict"]
    with live_server(ws_copy) as server, server.client() as client:
        assert client.post(PREDICT, json=BODY, headers={"x-api-key": key}).status_code == 200
        with reopen(ws_copy) as admin:
            admin.revoke_api_key(key.split("_")[1], "laptop stolen")
        assert wait_until(
            lambda: client.post(PREDICT, json=BODY, headers={"x-api-key": key}).status_code == 401
        )


def _soon(seconds: float) -> str:
    from datetime import UTC, datetime, timedelta

    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_jwt(ws_copy: Path, issuer: tuple[Any, JwtSection]) -> None:
    key, section = issuer
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header_none = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    confused_header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    confused_mac = hmac.new(
        public_pem, f"{confused_header}.{payload}".encode(), hashlib.sha256
    ).digest()
    valid = _token(key)
    head, body, signature = valid.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    confused = f"{confused_header}.{payload}.{_b64(confused_mac)}"
    forged_claims = _b64(json.dumps(_claims(sub="admin")).encode())
    with live_server(ws_copy, jwt=section) as server, server.client() as client:
        bad = {
            "expired": _token(key, exp=int(time.time()) - 600, iat=int(time.time()) - 900),
            "alg none": f"{header_none}.{payload}.",
            "HS256 signed with the RSA public key": confused,
            "tampered signature": f"{head}.{body}.{flipped}",
            "tampered claims": f"{head}.{forged_claims}.{signature}",
            "other issuer's key": _token(other_key),
            "wrong audience": _token(key, aud="someone-else"),
            "wrong issuer": _token(key, iss="https://evil.example"),
            "no expiry": jwt.encode({k: v for k, v in _claims().items() if k != "exp"}, key,
                                    algorithm="RS256", headers={"kid": "k1"}),
            "garbage": "a.b.c",
        }  # fmt: skip
        for name, token in bad.items():
            reply = client.post(PREDICT, json=BODY, headers={"authorization": f"Bearer {token}"})
            assert reply.status_code == 401, name
        no_scope = _token(key, scope="explain")
        reply = client.post(PREDICT, json=BODY, headers={"authorization": f"Bearer {no_scope}"})
        assert reply.status_code == 403
        other_model = _token(key, sealml_models=["fraud"])
        reply = client.post(PREDICT, json=BODY, headers={"authorization": f"Bearer {other_model}"})
        assert reply.status_code == 403
        assert _predicted(server) == 0
        reply = client.post(PREDICT, json=BODY, headers={"authorization": f"Bearer {valid}"})
        assert reply.status_code == 200
        assert _predicted(server) == 1
        server.runtime.recorder.flush()
    with reopen(ws_copy) as admin, admin.db.read() as session:
        events = [e.fields() for e in admin.ledger.events(session, EventFilter(action="serve.*"))]
    assert any(e["principal"] == "jwt:svc-billing" and e["outcome"] == "denied" for e in events)


def test_hs256_only_when_configured(tmp_path: Path) -> None:
    from sealml.serving.tokens import TokenRejectedError, TokenVerifier

    secret = tmp_path / "hs.key"
    secret.write_bytes(b"s" * 48)
    section = JwtSection(issuer=ISSUER, algorithms=["HS256"], hs256_secret_file=str(secret))
    verifier = TokenVerifier(section, tmp_path)
    assert verifier.verify(jwt.encode(_claims(), b"s" * 48, algorithm="HS256")).subject
    with pytest.raises(TokenRejectedError):
        verifier.verify(jwt.encode(_claims(), b"t" * 48, algorithm="HS256"))
    with pytest.raises(ValueError, match="hs256_secret_file"):
        TokenVerifier(JwtSection(issuer=ISSUER, algorithms=["HS256"]), tmp_path)
    secret.write_bytes(b"short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenVerifier(section, tmp_path)
