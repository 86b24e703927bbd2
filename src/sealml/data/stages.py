"""Built-in pipeline stages: ingest, validate, protect (PII), screen.

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
from ..pipeline.stage import Stage
from ..pipeline.stage import declare as _declare
from .pii import scan_frame
from .pseudonymise import VAULT_FORMAT, apply_actions, parse_actions
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


def protect(
    dataset: str,
    output: str,
    *,
    actions: dict[str, Any],
    region: str = "US",
    name: str | None = None,
) -> Stage:
    """Apply PII *actions* (drop, mask, pseudonym, tokenise, generalise) to *dataset*.

    Outputs: the protected dataset; ``<output>_pii``, a report of the detected personal data
    and the actions taken; ``<output>_vault``, the tokens' originals, sealed as a vault that
    only ``pii:reveal`` opens. The stage receives the workspace's pseudonym and token keys at
    run time; they are not recorded anywhere.
    """
    plan = parse_actions(actions, f"stage {name or 'protect_' + output!r} actions")

    def run(pii_keys: dict[str, str], **inputs: Any) -> dict[str, Any]:
        frame = inputs[dataset]
        findings = [f.to_dict() for f in scan_frame(frame, region)]
        applied = apply_actions(
            frame,
            plan,
            pseudonym_key=bytes.fromhex(pii_keys["pseudonym"]),
            token_key=bytes.fromhex(pii_keys["token"]),
        )
        return {
            output: applied.frame,
            f"{output}_pii": {"columns": findings, "actions": applied.actions},
            f"{output}_vault": {"format": VAULT_FORMAT, "tokens": applied.vault},
        }

    outputs = {output: "dataset", f"{output}_pii": "report", f"{output}_vault": "vault"}
    return _declare(run, name or f"protect_{output}", {dataset: "dataset"}, outputs, ("pii",))
