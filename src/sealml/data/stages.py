"""Built-in pipeline stages: ingest, validate, screen.

They are ordinary stages (see :func:`sealml.pipeline.stage`), made by factories so a pipeline
declares what it needs::

    from sealml.data import stages

    pipeline = Pipeline("credit", stages=[
        stages.ingest("raw", "applications", columns=["age", "income", "label"]),
        stages.validate("applications", "checked", schema="schema.yaml"),
        stages.screen("checked", "training", label="label", max_flagged_share=0.05),
        train, evaluate,
    ], sources={"raw": Source("https://data.example.org/applications.csv", sha256="…")})

A failing validation or screening gate quarantines: the offending dataset and the report are
sealed and flagged, the run stops (exit 1), and nothing downstream sees them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..pipeline.execution import Quarantined
from ..pipeline.stage import Stage, stage
from .screening import ScreeningPolicy
from .screening import screen as screen_frame
from .tables import parse_table
from .validation import SchemaSpec, load_schema, parse_schema
from .validation import validate as validate_frame


def ingest(
    source: str,
    output: str,
    *,
    fmt: str = "csv",
    columns: list[str] | None = None,
    encoding: str = "utf-8",
    name: str | None = None,
) -> Stage:
    """Parse a sealed source file into a dataset, keeping only the declared *columns*
    (data minimisation); the report records what was dropped."""

    def run(**inputs: Any) -> dict[str, Any]:
        frame = parse_table(inputs[source], fmt, source, encoding=encoding)
        dropped: list[str] = []
        if columns is not None:
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise UsageError(f"source {source!r} lacks declared column {missing[0]!r}")
            dropped = [str(c) for c in frame.columns if c not in columns]
            frame = frame[list(columns)]
        report = {
            "rows": len(frame),
            "columns": [str(c) for c in frame.columns],
            "dropped": dropped,
        }
        return {output: frame, f"{output}_ingest": report}

    return _declare(
        run,
        name or f"ingest_{output}",
        {source: "file"},
        {output: "dataset", f"{output}_ingest": "report"},
    )


def validate(
    dataset: str,
    output: str,
    *,
    schema: SchemaSpec | dict[str, Any] | Path | str,
    name: str | None = None,
) -> Stage:
    """Pass *dataset* on as *output* only if it satisfies *schema*; otherwise quarantine it
    with a report of every violation and its rows."""
    if isinstance(schema, SchemaSpec):
        spec = schema
    elif isinstance(schema, dict):
        spec = parse_schema(schema)
    else:
        spec = load_schema(Path(schema))

    def run(**inputs: Any) -> dict[str, Any]:
        report, coerced = validate_frame(inputs[dataset], spec)
        outputs = {output: coerced, f"{output}_validation": report.to_dict()}
        if not report.ok:
            raise Quarantined(
                f"{len(report.violations)} schema violation(s) in {dataset!r}", outputs
            )
        return outputs

    return _declare(
        run,
        name or f"validate_{output}",
        {dataset: "dataset"},
        {output: "dataset", f"{output}_validation": "report"},
    )


def screen(
    dataset: str,
    output: str,
    *,
    label: str,
    reference: str | None = None,
    max_flagged_share: float | None = None,
    action: str = "remove",
    name: str | None = None,
) -> Stage:
    """Screen *dataset* for poisoning; *output* is the cleaned dataset. Above
    *max_flagged_share* the gate quarantines the screened data and the report."""
    policy = ScreeningPolicy(label=label, action="remove" if action == "remove" else "downweight")
    declared = {dataset: "dataset", **({reference: "dataset"} if reference else {})}

    def run(**inputs: Any) -> dict[str, Any]:
        report, cleaned = screen_frame(
            inputs[dataset], policy, reference=inputs.get(reference or "")
        )
        outputs = {output: cleaned, f"{output}_screening": report.to_dict()}
        if max_flagged_share is not None and report.flagged_share > max_flagged_share:
            raise Quarantined(
                f"screening flagged {report.flagged_share:.1%} of rows, over the "
                f"{max_flagged_share:.1%} the policy allows",
                outputs,
            )
        return outputs

    return _declare(
        run,
        name or f"screen_{output}",
        declared,
        {output: "dataset", f"{output}_screening": "report"},
    )


def _declare(function: Any, name: str, inputs: dict[str, str], outputs: dict[str, str]) -> Stage:
    """A stage whose function takes its inputs as keyword arguments."""
    import inspect

    parameters = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in inputs]
    function.__signature__ = inspect.Signature(parameters)
    function.__name__ = name
    return stage(inputs=inputs, outputs=outputs, name=name)(function)
