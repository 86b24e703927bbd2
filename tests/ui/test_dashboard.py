"""The dashboard over real HTTPS: sign-in, sessions, roles, pages, headers, bad input."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sealml import Secret
from sealml.ledger import EventFilter

from ..conftest import reopen
from .conftest import CSRF, PASSWORDS, Dashboard, current_code, running_dashboard


def _events(path: Path, action: str) -> list[dict[str, object]]:
    with reopen(path) as ws:
        return [e.fields() for e in ws.audit_events(EventFilter(action=action))]


def test_every_page_needs_sign_in(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        for path in ("/", "/models/credit", "/models/credit/1/card", "/audit", "/incidents"):
            response = client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/login"
        assert client.get("/login").status_code == 200


def test_sign_in_sets_a_hardened_session_cookie_and_is_audited(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        form = client.get("/login")
        login_cookie = form.headers["set-cookie"]
        assert login_cookie.startswith("__Host-sealml-login=")
        response = dashboard.sign_in(client, "ada")
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = next(c for c in response.headers.get_list("set-cookie") if "session" in c)
        assert cookie.startswith("__Host-sealml-session=")
        lowered = cookie.lower()
        for flag in ("httponly", "secure", "samesite=strict", "path=/"):
            assert flag in lowered
        assert "max-age" not in lowered and "expires" not in lowered  # ends with the browser
        page = client.get("/")
        assert page.status_code == 200
        assert "ada (data-scientist)" in page.text and 'href="/models/credit"' in page.text
    signed = _events(dashboard.path, "ui.sign-in")
    assert [e["principal"] for e in signed] == ["ada"]


def test_security_headers_on_every_response(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        for response in (client.get("/login"), client.get("/nowhere")):
            headers = response.headers
            policy = headers["content-security-policy"]
            assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
            assert "script-src" not in policy  # no script may run at all
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["cache-control"] == "no-store"
            assert headers["referrer-policy"] == "no-referrer"
            assert headers["strict-transport-security"].startswith("max-age=")
        assert client.get("/static/dashboard.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("user,password", [("ada", "wrong-password"), ("nobody", "whatever")])
def test_wrong_credentials_are_refused_alike_and_audited(
    dashboard: Dashboard, user: str, password: str
) -> None:
    with dashboard.client() as client:
        response = dashboard.sign_in(client, user, password)
        assert response.status_code == 401
        assert "Wrong user name, password or one-time code." in response.text
        assert not any("session" in c for c in response.headers.get_list("set-cookie"))
        assert client.get("/").status_code == 303
    denied = [e for e in _events(dashboard.path, "auth.login") if e["outcome"] == "denied"]
    assert [e["principal"] for e in denied] == [user]
    assert password not in str(denied)


def test_a_post_without_the_forms_csrf_token_signs_nobody_in(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        client.get("/login")
        for token in ("", "00" * 32):
            response = client.post(
                "/login", data={"csrf": token, "user": "ada", "password": "scientist-password-1"}
            )
            assert response.status_code == 403
            assert client.get("/").status_code == 303
    with dashboard.client() as fresh:  # a token from another browser's form does not fit
        other = dashboard.client()
        token = CSRF.search(other.get("/login").text)
        assert token is not None
        response = fresh.post(
            "/login",
            data={"csrf": token.group(1), "user": "ada", "password": "scientist-password-1"},
        )
        assert response.status_code == 403
        other.close()
    assert _events(dashboard.path, "ui.sign-in") == []


def test_repeated_failures_lock_the_user_name_out(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        codes = [dashboard.sign_in(client, "ada", f"guess-{i}").status_code for i in range(5)]
        assert codes == [401] * 5
        locked = dashboard.sign_in(client, "ada")  # even the right password waits now
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) >= 1
        assert client.get("/").status_code == 303


def test_totp_is_required_when_enrolled_and_a_code_works_once(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        assert dashboard.sign_in(client, "otp").status_code == 401  # password alone
        code = current_code(dashboard.totp_secret)
        assert dashboard.sign_in(client, "otp", code=code).status_code == 303
        assert "otp (ml-engineer)" in client.get("/").text
    with dashboard.client() as replay:
        assert dashboard.sign_in(replay, "otp", code=code).status_code == 401
    denied = _events(dashboard.path, "auth.totp")
    assert [e["outcome"] for e in denied] == ["denied", "denied"]


def test_roles_decide_what_is_shown_and_denials_are_audited(dashboard: Dashboard) -> None:
    with dashboard.signed_in("ada") as ada:
        front = ada.get("/")
        assert "credit" in front.text and "Latest ledger events" not in front.text
        ledger = ada.get("/audit")
        assert ledger.status_code == 403
        assert "permission denied: ada lacks audit:read" in ledger.text
        assert ada.get("/audit/verify").status_code == 403
    with dashboard.signed_in("aud") as aud:
        page = aud.get("/audit")
        assert page.status_code == 200 and "ui.sign-in" in page.text
        verified = aud.get("/audit/verify")
        assert "The ledger verifies" in verified.text
        assert aud.get("/models/credit").status_code == 200  # auditors read the registry
    denied = [e for e in _events(dashboard.path, "audit.show") if e["outcome"] == "denied"]
    assert [e["principal"] for e in denied] == ["ada"]


def test_model_page_shows_versions_gates_history_and_a_sandboxed_card(
    dashboard: Dashboard,
) -> None:
    with dashboard.signed_in("ada") as ada:
        page = ada.get("/models/credit")
        assert page.status_code == 200
        for text in ("v1", "v2", "staging", "Gates for v2", "to production", "model.promote"):
            assert text in page.text
        card = ada.get("/models/credit/1/card")
        assert card.status_code == 200 and "credit" in card.text
        policy = card.headers["content-security-policy"]
        assert "sandbox" in policy and "script" not in policy
        assert ada.get("/models/credit/9/card").status_code == 404
        assert ada.get("/models/nope").status_code == 404
        assert ada.get("/models/credit/abc/card").status_code == 400
        assert ada.get("/models/..%2F..%2Fetc/1/card").status_code in (400, 404)


def test_what_others_wrote_is_shown_escaped(dashboard: Dashboard) -> None:
    hostile = '<script>alert("x")</script>'
    with dashboard.client() as client:
        assert dashboard.sign_in(client, hostile, "pw").status_code == 401
    with dashboard.signed_in("aud") as aud:
        page = aud.get("/audit", params={"action": "auth.login"})
        assert hostile not in page.text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text


def test_ledger_pages_filter_and_continue(dashboard: Dashboard) -> None:
    with reopen(dashboard.path) as ws:
        for i in range(60):
            ws.record([ws.event("note.test", f"thing:{i}")])
    with dashboard.signed_in("aud") as aud:
        first = aud.get("/audit", params={"action": "note.*"})
        assert first.text.count("note.test") == 50 and "thing:59" in first.text
        assert "thing:9<" not in first.text
        link = first.text.split('href="/audit?')[-1].split('"')[0].replace("&amp;", "&")
        older = aud.get(f"/audit?{link}")
        assert older.text.count("note.test") == 10 and "thing:0<" in older.text
        assert "Older events" not in older.text
        assert aud.get("/audit", params={"before": "x"}).status_code == 400
        assert aud.get("/audit", params={"action": "a" * 201}).status_code == 400


def test_a_tampered_ledger_shows_as_not_verifying(dashboard: Dashboard) -> None:
    database = dashboard.path / ".sealml" / "sealml.db"
    with sqlite3.connect(database) as db:
        body = db.execute("SELECT body FROM ledger_events WHERE seq = 3").fetchone()[0]
        db.execute(
            "UPDATE ledger_events SET body = ? WHERE seq = 3",
            (bytes(body).replace(b"admin", b"mallo", 1),),
        )
    with dashboard.signed_in("aud") as aud:
        page = aud.get("/audit/verify")
        assert page.status_code == 200
        assert "does NOT verify" in page.text and "event 3" in page.text


def test_disabling_a_user_ends_their_sessions_at_once(dashboard: Dashboard) -> None:
    with dashboard.signed_in("ada") as ada:
        assert ada.get("/").status_code == 200
        with reopen(dashboard.path) as ws:
            ws.set_user_disabled("ada", True)
        assert ada.get("/").status_code == 401
        assert ada.get("/").status_code == 303  # the session is gone
        assert dashboard.sign_in(ada, "ada").status_code == 401


def test_a_password_change_ends_sessions_begun_under_the_old_one(dashboard: Dashboard) -> None:
    with dashboard.signed_in("ada") as ada, dashboard.signed_in("aud") as aud:
        assert ada.get("/").status_code == 200
        with reopen(dashboard.path, "ada", PASSWORDS["ada"]) as ws:
            ws.change_password(Secret(PASSWORDS["ada"]), Secret("ada-new-password-1"))
        assert ada.get("/").status_code == 401
        assert ada.get("/").status_code == 303  # the session is gone
        assert aud.get("/").status_code == 200  # other people's sessions stay
        assert dashboard.sign_in(ada, "ada").status_code == 401
        assert dashboard.sign_in(ada, "ada", "ada-new-password-1").status_code == 303
        assert ada.get("/").status_code == 200


def test_a_reset_password_must_be_changed_before_signing_in(dashboard: Dashboard) -> None:
    with reopen(dashboard.path) as admin:
        admin.reset_password("ada", Secret("ada-reset-password-1"))
    with dashboard.client() as ada:
        refused = dashboard.sign_in(ada, "ada", "ada-reset-password-1")
        assert refused.status_code == 403 and "user passwd" in refused.text
        assert ada.get("/").status_code == 303  # no session was made
    with reopen(dashboard.path, "ada", "ada-reset-password-1") as ws:
        ws.change_password(Secret("ada-reset-password-1"), Secret("ada-own-password-1"))
    with dashboard.client() as ada:
        assert dashboard.sign_in(ada, "ada", "ada-own-password-1").status_code == 303


def test_sign_out_needs_the_csrf_token_and_kills_the_cookie(dashboard: Dashboard) -> None:
    with dashboard.signed_in("ada") as ada:
        page = ada.get("/")
        token = CSRF.search(page.text)
        assert token is not None
        stolen = dict(ada.cookies)
        assert ada.post("/logout", data={"csrf": "00" * 32}).status_code == 403
        assert ada.get("/").status_code == 200  # a forged sign-out did nothing
        response = ada.post("/logout", data={"csrf": token.group(1)})
        assert response.status_code == 303 and response.headers["location"] == "/login"
    with dashboard.client(cookies=stolen) as replay:
        assert replay.get("/").status_code == 303
    assert [e["principal"] for e in _events(dashboard.path, "ui.sign-out")] == ["ada"]


def test_sessions_end_after_idle_time(ws_copy: Path, people: str) -> None:
    with (
        running_dashboard(ws_copy, people, idle_minutes=0) as short,
        short.signed_in("ada") as ada,
    ):
        assert ada.get("/").status_code == 303


@pytest.mark.parametrize(
    "content_type,body,status",
    [
        ("application/json", b'{"user": "ada"}', 415),
        ("application/x-www-form-urlencoded", b"user=" + b"a" * 9000, 413),
        ("application/x-www-form-urlencoded", b"user=a&user=b", 400),
        ("application/x-www-form-urlencoded", b"user=a&evil=1", 400),
        ("application/x-www-form-urlencoded", b"user=%ff%fe", 400),
    ],
)
def test_malformed_forms_are_refused(
    dashboard: Dashboard, content_type: str, body: bytes, status: int
) -> None:
    with dashboard.client() as client:
        response = client.post("/login", content=body, headers={"content-type": content_type})
        assert response.status_code == status
        assert "Traceback" not in response.text and "<h1>Refused</h1>" in response.text


def test_a_foreign_host_name_is_refused(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        response = client.get("/login", headers={"host": "attacker.example"})
        assert response.status_code == 400


def test_the_workspace_stays_intact(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        dashboard.sign_in(client, "ada", "wrong")
        client.post("/login", content=b"\xff" * 100, headers={"content-type": "text/plain"})
    with reopen(dashboard.path, "ada", "scientist-password-1") as ws:
        assert [v.version for v in ws.versions("credit")] == [2, 1]
    with reopen(dashboard.path, "aud", "auditor-password-1") as ws:
        assert ws.audit_verify().ok


def test_cli_refuses_plain_http_off_loopback(cli: object) -> None:
    result = cli("ui", "--host", "0.0.0.0", "--insecure-http")  # type: ignore[operator]  # noqa: S104
    assert result.code == 2
    assert "clear text" in result.stderr and "Traceback" not in result.stderr


def test_cli_refuses_half_a_certificate(cli: object, workspace: object, tmp_path: Path) -> None:
    from ..conftest import admin_env

    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    result = cli("ui", "--cert", str(cert), env=admin_env())  # type: ignore[operator]
    assert result.code == 2 and "--cert and --key go together" in result.stderr


def test_cli_needs_the_passphrase_before_serving(cli: object, workspace: object) -> None:
    result = cli("ui", "--dev-tls")  # type: ignore[operator]
    assert result.code == 2
    assert "passphrase" in result.stderr.lower() and "Traceback" not in result.stderr


def test_signing_in_again_ends_the_browsers_previous_session(dashboard: Dashboard) -> None:
    name = "__Host-sealml-session"
    with dashboard.signed_in("ada") as ada:
        first = ada.cookies[name]
    with dashboard.client() as browser:
        token = CSRF.search(browser.get("/login").text)
        assert token is not None
        browser.cookies.set(name, first)
        form = {"csrf": token.group(1), "user": "aud", "password": "auditor-password-1"}
        response = browser.post("/login", data=form)
        assert response.status_code == 303
        second = response.cookies[name]
    with dashboard.client(cookies={name: second}) as fresh:
        assert "aud (auditor)" in fresh.get("/").text
    with dashboard.client(cookies={name: first}) as stale:
        assert stale.get("/").status_code == 303


def test_provenance_page_walks_back_to_the_pinned_source(dashboard: Dashboard) -> None:
    with dashboard.signed_in("ada") as ada:
        page = ada.get("/models/credit/1/provenance")
        assert page.status_code == 200
        assert "pinned source" in page.text and "attested" in page.text
        assert "signed by" in page.text and "Every step below verified" in page.text
    with reopen(dashboard.path) as ws:
        model = ws.show_model("credit", 1).artifact_id
        source = next(s for s in ws.verify_provenance(model) if s.status == "source")
        with ws.db.read() as session:
            blob = ws.blobs.path_of(ws._find(session, source.artifact.id).blob_name)  # type: ignore[attr-defined]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with dashboard.signed_in("ada") as ada:
        refused = ada.get("/models/credit/1/provenance")
        assert refused.status_code == 409
        assert "<h1>Refused</h1>" in refused.text and "pinned source" not in refused.text


LOGGED = """
import io
import pandas as pd
from pathlib import Path
from sklearn.linear_model import LogisticRegression
from sealml.pipeline import Pipeline, Source, stage


@stage(inputs={"csv": "file"}, outputs={"model": "model"})
def train(csv):
    frame = pd.read_csv(io.BytesIO(csv))
    print("epoch 1: loss 0.42 <b>not bold</b>")
    model = LogisticRegression(max_iter=500).fit(frame[["age", "income"]], frame["y"])
    return {"model": model}


pipeline = Pipeline("logged", stages=[train], sources={"csv": Source(Path("data.csv"))})
"""


def test_a_versions_stage_logs_are_one_click_away(ws_copy: Path, people: str) -> None:
    import textwrap

    from sealml.pipeline.loader import load_pipeline

    folder = ws_copy.parent / "logged"
    folder.mkdir()
    (folder / "data.csv").write_text(
        "age,income,y\n" + "".join(f"{20 + i},{30 + i * 2},{i % 2}\n" for i in range(40))
    )
    (folder / "logged_pipeline.py").write_text(textwrap.dedent(LOGGED))
    with reopen(ws_copy) as ws:
        report = ws.run_pipeline(load_pipeline(folder / "logged_pipeline.py"))
        ws.register_model(report.artifacts["model"], "logged")
        log_id = report.stages[0].log
    assert log_id is not None
    with running_dashboard(ws_copy, people) as running, running.signed_in("ada") as ada:
        chain = ada.get("/models/logged/1/provenance")
        assert f'href="/logs/{log_id}"' in chain.text
        page = ada.get(f"/logs/{log_id}")
        assert page.status_code == 200 and "epoch 1: loss 0.42" in page.text
        assert "&lt;b&gt;not bold&lt;/b&gt;" in page.text and "<b>not bold" not in page.text
        assert ada.get("/logs/not-an-id").status_code == 400
        assert ada.get(f"/logs/{'0' * 32}").status_code == 404
        model_id = report.artifacts["model"]
        assert ada.get(f"/logs/{model_id}").status_code == 404  # a model is not a log


def test_plain_http_on_loopback_uses_unprefixed_cookies_without_hsts(
    ws_copy: Path, people: str
) -> None:
    with running_dashboard(ws_copy, people, tls=False) as plain, plain.client() as client:
        assert plain.url.startswith("http://127.0.0.1:")
        response = plain.sign_in(client, "ada")
        assert response.status_code == 303
        cookie = next(c for c in response.headers.get_list("set-cookie") if "session" in c)
        assert cookie.startswith("sealml-session=") and "secure" not in cookie.lower()
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        page = client.get("/")
        assert page.status_code == 200 and "strict-transport-security" not in page.headers


def test_a_newly_approved_policy_applies_without_a_restart(dashboard: Dashboard) -> None:
    with dashboard.signed_in("ada") as ada:
        assert ada.get("/models/credit").status_code == 200
        with reopen(dashboard.path) as admin:
            roles = admin.config.access.roles
            roles["data-scientist"] = [p for p in roles["data-scientist"] if p != "registry:read"]
            admin.approve_policy()
        refused = ada.get("/models/credit")
        assert refused.status_code == 403 and "lacks registry:read" in refused.text


def test_people_page_is_an_access_review_for_those_allowed(dashboard: Dashboard) -> None:
    with reopen(dashboard.path, "ada", PASSWORDS["ada"]) as ws:
        _, rotated, _ = ws.rotate_signing_key(password=Secret(PASSWORDS["ada"]))
    with dashboard.signed_in("aud") as aud:  # auditors have user:read
        assert 'href="/people"' in aud.get("/").text
        page = aud.get("/people")
        assert page.status_code == 200
        for text in ("ada", "data-scientist", "otp", "ml-engineer", "svc", "service"):
            assert text in page.text
        since = rotated.key_since[:10]
        assert f"{rotated.public_key.fingerprint()[:16]}, since {since} (1 retired)" in page.text
        rows = {row.split("</td>")[0].split(">")[-1]: row for row in page.text.split("<tr>")[1:]}
        assert "<td>enrolled</td>" in rows["otp"] and "<td>none</td>" in rows["ada"]
        assert "registry:read" in page.text and "audit:verify" in page.text
        assert "Approved by init at " in page.text and "proposes no changes" in page.text
        with reopen(dashboard.path) as admin:
            verifier = admin.verifier.encode()
        assert "passphrase-protected keystore, current local:" in page.text
        assert "in the keystore, in use since" in page.text and verifier in page.text
    with dashboard.signed_in("ada") as ada:
        front = ada.get("/").text
        assert 'href="/people"' not in front and 'href="/audit"' not in front
        refused = ada.get("/people")
        assert refused.status_code == 403 and "lacks user:read" in refused.text


def test_monitoring_runs_are_listed_and_their_pages_sandboxed(dashboard: Dashboard) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    shifted = pd.DataFrame(
        {
            "age": rng.integers(18, 80, 500),
            "income": rng.normal(75.0, 15.0, 500).round(2),
            "colour": rng.choice(["red", "green", "blue"], 500),
        }
    )
    with reopen(dashboard.path) as admin:
        admin.monitor_check("credit", "staging", data=shifted)
    with dashboard.signed_in("ada") as ada:
        model = ada.get("/models/credit")
        assert "Monitoring runs" in model.text and "credit-v1-drift.html" in model.text
        page_id = model.text.split('href="/drift/')[1].split('"')[0]
        page = ada.get(f"/drift/{page_id}")
        assert page.status_code == 200 and "income" in page.text
        policy = page.headers["content-security-policy"]
        assert "sandbox" in policy and "script" not in policy
        assert ada.get("/drift/nope").status_code == 400
    with reopen(dashboard.path) as admin:
        model_id = admin.show_model("credit", 1).artifact_id
    with dashboard.signed_in("ada") as ada:
        assert ada.get(f"/drift/{model_id}").status_code == 404  # only drift pages


@pytest.mark.parametrize("workers", [1, 4])
def test_a_slow_page_holds_up_the_others_only_without_a_pool(
    ws_copy: Path, people: str, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    import httpx

    from sealml.ui import views

    entered, release = threading.Event(), threading.Event()
    original = views.audit

    def slow_audit(workspace: Any, where: Any) -> Any:
        entered.set()
        assert release.wait(60)
        return original(workspace, where)

    monkeypatch.setattr(views, "audit", slow_audit)
    with (
        running_dashboard(ws_copy, people, workers=workers) as running,
        running.signed_in("aud") as aud,
        running.signed_in("ada") as ada,
        ThreadPoolExecutor(1) as pool,
    ):
        slow = pool.submit(aud.get, "/audit")
        assert entered.wait(60)
        try:
            if workers == 1:  # the one workspace object is busy: the next page waits
                with pytest.raises(httpx.ReadTimeout):
                    ada.get("/", timeout=2)
            else:
                assert ada.get("/", timeout=30).status_code == 200
                assert not slow.done()
        finally:
            release.set()
        assert slow.result(timeout=60).status_code == 200
