"""Browser sessions and host rules on their own."""

from __future__ import annotations

import time

from sealml.access.principals import Actor
from sealml.ui import sessions as session_module
from sealml.ui.server import allowed_hosts
from sealml.ui.sessions import BrowserSessions


def _actor(name: str, stamp: str = "s1") -> Actor:
    class Principal:  # only the name and password stamp are read by the session table
        def __init__(self, name: str) -> None:
            self.name = name
            self.password_stamp = stamp

    return Actor(Principal(name), None, "password")  # type: ignore[arg-type]


def test_tokens_are_random_and_only_their_hash_is_kept() -> None:
    table = BrowserSessions(60, 600)
    first, second = table.start(_actor("a")), table.start(_actor("a"))
    assert first != second and len(first) == 64
    assert table.get(first) is not None and table.get(second) is not None
    kept = repr(vars(table))
    assert first not in kept and second not in kept
    assert table.get(first[:-1] + ("0" if first[-1] != "0" else "1")) is None
    assert table.get("") is None and table.get(None) is None and table.get("x" * 10) is None


def test_sessions_expire_when_idle_and_at_their_lifetime() -> None:
    idle = BrowserSessions(0.05, 600)
    token = idle.start(_actor("a"))
    time.sleep(0.1)
    assert idle.get(token) is None and len(idle) == 0
    lifetime = BrowserSessions(600, 0.15)
    token = lifetime.start(_actor("a"))
    for _ in range(4):  # activity does not extend the absolute lifetime
        time.sleep(0.05)
        lifetime.get(token)
    assert lifetime.get(token) is None


def test_end_and_end_for() -> None:
    table = BrowserSessions(60, 600)
    a1, a2, b = table.start(_actor("a")), table.start(_actor("a")), table.start(_actor("b"))
    assert table.end_for("a") == 2
    assert table.get(a1) is None and table.get(a2) is None and table.get(b) is not None
    assert table.end(b) is not None and table.end(b) is None
    old, new = table.start(_actor("c", "s1")), table.start(_actor("c", "s2"))
    assert table.end_for("c", unless_stamp="s2") == 1
    assert table.get(old) is None and table.get(new) is not None


def test_the_table_is_bounded(monkeypatch: object) -> None:
    monkeypatch.setattr(session_module, "MAX_SESSIONS", 3)  # type: ignore[attr-defined]
    table = BrowserSessions(60, 600)
    tokens = [table.start(_actor(str(i))) for i in range(5)]
    assert len(table) == 3
    assert table.get(tokens[0]) is None and table.get(tokens[-1]) is not None


def test_csrf_tokens_are_bound_and_checked() -> None:
    table, other = BrowserSessions(60, 600), BrowserSessions(60, 600)
    token = table.csrf_token("cookie-1")
    assert table.csrf_ok("cookie-1", token)
    assert not table.csrf_ok("cookie-2", token)
    assert not other.csrf_ok("cookie-1", token)  # keyed per process
    assert not table.csrf_ok(None, token) and not table.csrf_ok("cookie-1", None)


def test_allowed_hosts() -> None:
    assert allowed_hosts("127.0.0.1") == ("127.0.0.1", "localhost", "[::1]")
    assert allowed_hosts("dash.example.com") == ("dash.example.com",)
    assert allowed_hosts("0.0.0.0") == ("*",)  # noqa: S104
