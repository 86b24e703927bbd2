"""The built-in evaluation stage: one report with every figure the gates read.

::

    from sealml.evaluation import stages

    pipeline = Pipeline("credit", stages=[
        ..., train,
        stages.evaluate("model", "test", "evaluation", label="income",
                        sensitive=["sex", "race"], members="train"),
    ], ...)

The report holds ``metrics`` (``accuracy``, ``roc_auc`` when the model gives
probabilities, ``fairness.*``, ``privacy.*``, ``robustness.*`` and, with *members*,
``leakage.test_rows_in_train``), the names of its test and members inputs (``data``), and
the detailed results. Registering the model picks it up as the version's evaluation, and
the registry's gates (``[registry.gates.<alias>] min_metrics / max_metrics``) read those
metrics; ``require_held_out_test`` (on by default) checks through the report's signed
provenance that it evaluated this model on data outside the model's own inputs.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..pipeline.stage import Stage, declare
from . import fairness, privacy, robustness


def evaluate(
    model: str,
    test: str,
    output: str,
    *,
    label: str,
    sensitive: list[str] | None = None,
    members: str | None = None,
    shadow_models: int = 0,
    hardening: str = "none",
    budgets: list[float] | None = None,
    immutable: list[str] | None = None,
    robustness_rows: int = 500,
    positive: Any = 1,
    min_group_size: int = fairness.DEFAULT_MIN_GROUP_SIZE,
    name: str | None = None,
) -> Stage:
    """Evaluate *model* on the *test* dataset: accuracy and, when asked, fairness over the
    *sensitive* columns and membership-inference risk against the *members* dataset (the
    training rows), and robust accuracy under evasion attacks for each perturbation budget
    in *budgets* (standard deviations per numeric feature; *immutable* features fixed). The
    model gets the columns it was trained on (``feature_names_in_``), so sensitive columns
    it never saw can still be assessed. Fairness gaps count only rates resting on at
    least *min_group_size* rows (see :func:`sealml.evaluation.fairness.assess`)."""
    inputs = {model: "model", test: "dataset"}
    if members is not None:
        inputs[members] = "dataset"

    def run(**given: Any) -> dict[str, Any]:
        from sklearn.base import clone
        from sklearn.metrics import accuracy_score, roc_auc_score

        fitted, frame = given[model], given[test]
        if label not in frame.columns:
            raise UsageError(f"dataset {test!r} has no label column {label!r}")
        features, truth = _inputs(fitted, frame, label), frame[label]
        predicted = fitted.predict(features)
        metrics: dict[str, Any] = {
            "rows": len(frame),
            "accuracy": round(float(accuracy_score(truth, predicted)), 6),
        }
        # Names of the inputs, which the stage's provenance maps to artifacts: the registry
        # checks that the test input is not among the model's own inputs.
        report: dict[str, Any] = {"metrics": metrics, "data": {"test": test, "members": members}}
        if hasattr(fitted, "predict_proba") and len(getattr(fitted, "classes_", [])) == 2:
            scores = fitted.predict_proba(features)[:, list(fitted.classes_).index(positive)]
            metrics["roc_auc"] = round(float(roc_auc_score(truth == positive, scores)), 6)
        if sensitive:
            missing = [c for c in sensitive if c not in frame.columns]
            if missing:
                raise UsageError(f"dataset {test!r} has no sensitive column {missing[0]!r}")
            assessed = fairness.assess(
                truth, predicted, frame[sensitive], positive=positive, min_group_size=min_group_size
            )
            metrics.update(assessed.metrics())
            report["fairness"] = assessed.to_dict()
        if members is not None:
            trained = given[members]
            member_x, member_y = _inputs(fitted, trained, label), trained[label]
            metrics["leakage.test_rows_in_train"] = round(
                _shared_share(features.assign(**{label: truth}),
                              member_x.assign(**{label: member_y})), 6,
            )  # fmt: skip
            risk = privacy.assess(
                fitted,
                (member_x, member_y),
                (features, truth),
                train=(lambda x, y: clone(fitted).fit(x, y)) if shadow_models else None,
                shadows=shadow_models,
                hardening=hardening,
            )
            metrics.update(risk.metrics())
            report["privacy"] = risk.to_dict()
        if budgets:
            fixed = tuple(c for c in (immutable or []) if c in features.columns)
            results = robustness.assess(
                fitted, features, truth.to_numpy(),
                [robustness.Budget(float(b), immutable=fixed) for b in budgets],
                rows=robustness_rows,
            )  # fmt: skip
            metrics.update(robustness.metrics(results))
            report["robustness"] = [r.to_dict() for r in results]
        return {output: report}

    return declare(run, name or f"evaluate_{model}", inputs, {output: "report"})


def _shared_share(test: Any, train: Any) -> float:
    """The share of *test* rows (features and label) that also occur in *train*: rows the
    model may have memorised, on which its test figures overstate it."""
    import pandas as pd

    if len(test) == 0:
        return 0.0
    seen = pd.util.hash_pandas_object(train, index=False)
    return float(pd.util.hash_pandas_object(test, index=False).isin(seen).mean())


def _inputs(fitted: Any, frame: Any, label: str) -> Any:
    """The model's input columns from *frame*."""
    names = getattr(fitted, "feature_names_in_", None)
    if names is None:
        return frame.drop(columns=[label])
    missing = [str(n) for n in names if n not in frame.columns]
    if missing:
        raise UsageError(f"the dataset lacks the model's input column {missing[0]!r}")
    return frame[list(names)]
