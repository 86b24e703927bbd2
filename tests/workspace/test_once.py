"""Verification remembered for one operation only (sealml.workspace.once)."""

from __future__ import annotations

import threading

import pytest

from sealml.workspace.once import once, verifies_once


class Counting:
    """Stands in for a workspace: counts how often each check really runs."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def check(self, key: str) -> str:
        def verify() -> str:
            self.runs.append(key)
            return f"verified {key}"

        return once(self, "check", key, verify)

    @verifies_once
    def operation(self, *keys: str) -> list[str]:
        return [self.check(k) for k in keys]

    @verifies_once
    def outer(self) -> list[str]:
        return self.operation("a") + self.operation("a", "b")

    @verifies_once
    def failing_then_passing(self, failures: list[str]) -> str:
        def verify() -> str:
            self.runs.append("flaky")
            if failures:
                raise ValueError(failures.pop())
            return "ok"

        with pytest.raises(ValueError):
            once(self, "check", "flaky", verify)
        return once(self, "check", "flaky", verify)


def test_outside_an_operation_every_check_runs() -> None:
    item = Counting()
    item.check("a")
    item.check("a")
    assert item.runs == ["a", "a"]


def test_inside_an_operation_each_check_runs_once_and_not_after() -> None:
    item = Counting()
    assert item.operation("a", "b", "a") == ["verified a", "verified b", "verified a"]
    assert item.runs == ["a", "b"]
    item.operation("a")
    assert item.runs == ["a", "b", "a"]


def test_a_nested_operation_shares_the_outer_memory() -> None:
    item = Counting()
    item.outer()
    assert item.runs == ["a", "b"]


def test_a_failure_is_not_remembered() -> None:
    item = Counting()
    assert item.failing_then_passing(["tampered"]) == "ok"
    assert item.runs == ["flaky", "flaky"]


def test_two_workspaces_and_two_threads_never_share() -> None:
    first, second = Counting(), Counting()

    @verifies_once
    def both(_: object) -> None:
        first.check("a")
        second.check("a")
        worker = threading.Thread(target=first.check, args=("a",))
        worker.start()
        worker.join()
        first.check("a")

    both(None)
    assert first.runs == ["a", "a"]  # once here, once in the thread
    assert second.runs == ["a"]


def test_one_operation_block_joins_the_calls_inside_it_only() -> None:
    from sealml.workspace.once import one_operation

    item = Counting()
    with one_operation():
        item.operation("a")
        item.operation("a", "b")
        item.check("b")
    assert item.runs == ["a", "b"]
    item.operation("a")
    assert item.runs == ["a", "b", "a"]
