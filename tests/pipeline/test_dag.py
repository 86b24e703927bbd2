"""Pipelines are checked before anything runs."""

from __future__ import annotations

from typing import Any

import pytest

from sealml.errors import UsageError
from sealml.pipeline import Pipeline, stage


@stage(outputs={"a": "dataset"})
def make_a(rows: int = 3) -> dict[str, Any]:
    return {"a": rows}


@stage(inputs={"a": "dataset"}, outputs={"b": "report"})
def make_b(a: Any, scale: float = 1.0) -> dict[str, Any]:
    return {"b": {}}


def test_order_follows_dependencies() -> None:
    pipeline = Pipeline("p", stages=[make_b, make_a])
    assert [s.name for s in pipeline.check()] == ["make_a", "make_b"]
    assert pipeline.parameters_for(make_b, {"scale": 2.0}) == {"scale": 2.0}


def test_cycle_is_refused() -> None:
    @stage(inputs={"b": "report"}, outputs={"c": "report"})
    def one(b: Any) -> dict[str, Any]:
        return {}

    @stage(inputs={"c": "report"}, outputs={"b": "report"})
    def two(c: Any) -> dict[str, Any]:
        return {}

    with pytest.raises(UsageError, match="cycle"):
        Pipeline("p", stages=[one, two]).check()


def test_missing_input_is_refused() -> None:
    with pytest.raises(UsageError, match="produced by no stage"):
        Pipeline("p", stages=[make_b]).check()


def test_type_mismatch_is_refused() -> None:
    @stage(inputs={"a": "model"}, outputs={"c": "report"})
    def wants_model(a: Any) -> dict[str, Any]:
        return {}

    with pytest.raises(UsageError, match="expects a model"):
        Pipeline("p", stages=[make_a, wants_model]).check()


def test_duplicate_outputs_and_names_are_refused() -> None:
    with pytest.raises(UsageError, match="more than once"):
        Pipeline(
            "p", stages=[make_a, stage(outputs={"a": "report"}, name="again")(lambda: {})]
        ).check()
    with pytest.raises(UsageError, match="two stages"):
        Pipeline("p", stages=[make_a, make_a]).check()


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(UsageError, match="no stage takes a parameter 'rate'"):
        Pipeline("p", stages=[make_a, make_b]).check({"rate": 1})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outputs": {"x": "tensor"}}, "unknown type"),
        ({"outputs": {}}, "no outputs"),
        ({"outputs": {"x": "report"}, "inputs": {"y": "report"}}, "does not take"),
    ],
)
def test_bad_stage_declarations(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        stage(**kwargs)(lambda: {})
