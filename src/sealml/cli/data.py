"""``sealml data validate | schema | pii | reveal``: check and protect datasets.

SOURCE is a local file (CSV, Parquet, JSON lines, optionally gzipped) or an artifact id or
name in the workspace (read only after it verified).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..data import pii as pii_detection
from ..data.pseudonymise import anonymity, apply_actions, parse_actions
from ..data.validation import infer_schema, load_schema, validate
from ..errors import IntegrityError, UsageError
from ..pipeline.codecs import PARQUET_MEDIA_TYPE
from ..workspace import Workspace
from ..workspace.data import read_local_table
from ..yamlfile import read_yaml
from .common import JsonOption, open_workspace, out, print_json, print_table

app = typer.Typer(help="Validate datasets, find and protect personal data.", no_args_is_help=True)

FormatOption = typer.Option(None, "--format", help="csv, parquet or jsonl (default: by name).")
EncodingOption = typer.Option("utf-8", "--encoding", help="Text encoding of CSV/JSON input.")


@contextlib.contextmanager
def _source(
    ctx: typer.Context, source: str, fmt: str | None, encoding: str
) -> Iterator[tuple[Any, Workspace | None]]:
    """The dataset as a DataFrame, and the open workspace if SOURCE was an artifact."""
    path = Path(source)
    if path.exists():
        yield read_local_table(path, fmt=fmt, encoding=encoding), None
        return
    with open_workspace(ctx) as workspace:
        yield workspace.read_table(source, fmt=fmt, encoding=encoding), workspace


@app.command("validate")
def validate_command(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="File or artifact."),
    schema: Path = typer.Option(..., "--schema", help="YAML schema file."),
    fmt: str | None = FormatOption,
    encoding: str = EncodingOption,
    as_json: bool = JsonOption,
) -> None:
    """Check a dataset against a schema; list every violation with its rows. Exit 1 if any."""
    spec = load_schema(schema)
    with _source(ctx, source, fmt, encoding) as (frame, _):
        report, _ = validate(frame, spec)
    if as_json:
        print_json(report.to_dict())
    else:
        table = Table("column", "check", "rows", "examples", box=None)
        for violation in report.violations:
            rows = ", ".join(str(r) for r in violation.rows[:10])
            if len(violation.rows) > 10:
                rows += f" … ({len(violation.rows)} rows)"
            table.add_row(
                violation.column, violation.check, rows, ", ".join(map(str, violation.examples))
            )
        if report.violations:
            print_table(table)
        out.print(
            f"{report.rows} rows, {report.columns} columns: "
            + ("valid" if report.ok else f"{len(report.violations)} violation(s)")
        )
    if not report.ok:
        raise IntegrityError(f"{source} does not satisfy {schema}")


@app.command("schema")
def schema_command(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="A trusted reference dataset (file or artifact)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the YAML here."),
    fmt: str | None = FormatOption,
    encoding: str = EncodingOption,
) -> None:
    """Infer a schema from a trusted reference dataset, to review and tighten."""
    import yaml

    with _source(ctx, source, fmt, encoding) as (frame, _):
        text = yaml.safe_dump(infer_schema(frame), sort_keys=False, allow_unicode=True)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


@app.command("pii")
def pii_command(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="File or artifact."),
    actions: Path | None = typer.Option(None, "--actions", help="YAML: column → action."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the protected data (Parquet)."
    ),
    seal: str | None = typer.Option(
        None, "--seal", help="Seal the protected data under this name."
    ),
    quasi: str | None = typer.Option(None, "--quasi", help="Quasi-identifiers, comma-separated."),
    sensitive: str | None = typer.Option(
        None, "--sensitive", help="Sensitive attribute for l-diversity."
    ),
    k: int | None = typer.Option(
        None, "--k", min=2, max=1_000_000, help="Suppress rows to reach this k."
    ),
    region: str = typer.Option("US", "--region", help="Default phone region (ISO 3166)."),
    fmt: str | None = FormatOption,
    encoding: str = EncodingOption,
    as_json: bool = JsonOption,
) -> None:
    """Find personal data per column; optionally apply actions and report k-anonymity."""

    if (output or seal) and not actions and k is None:
        raise UsageError("--output/--seal need --actions or --k")
    plan = None
    if actions is not None:
        plan = parse_actions(read_yaml(actions, "actions file"), str(actions))
    with _source(ctx, source, fmt, encoding) as (frame, workspace):
        findings = pii_detection.scan_frame(frame, region)
        result: dict[str, Any] = {"columns": [f.to_dict() for f in findings]}
        protected = frame
        if plan is not None or seal:
            holder = workspace
            with contextlib.ExitStack() as stack:
                if holder is None:
                    holder = stack.enter_context(open_workspace(ctx))
                protected, result["actions"], vault = _protect(holder, frame, plan, seal)
                if quasi:
                    report, protected = anonymity(protected, quasi.split(","), sensitive, k)
                    result["anonymity"] = report.to_dict()
                if seal:
                    result["sealed"] = _seal(holder, protected, seal, vault, source)
        elif quasi:
            report, protected = anonymity(frame, quasi.split(","), sensitive, k)
            result["anonymity"] = report.to_dict()
        if output is not None:
            protected.to_parquet(output)
            output.chmod(0o600)
    if as_json:
        print_json(result)
        return
    table = Table("column", "pii", "confidence", "name hint", box=None)
    for finding in findings:
        table.add_row(
            finding.column,
            finding.pii_type or "-",
            f"{finding.confidence:.2f}",
            finding.name_hint or "-",
        )
    print_table(table)
    if "anonymity" in result:
        a = result["anonymity"]
        out.print(
            f"k = {a['k']} over {', '.join(a['quasi_identifiers'])}; "
            f"l = {a['l_diversity']}; suppressed {a['suppressed']} rows"
        )
    if "sealed" in result:
        out.print(f"sealed protected dataset {result['sealed']['dataset']}")


def _protect(
    workspace: Workspace, frame: Any, plan: Any, seal: str | None
) -> tuple[Any, dict[str, str], dict[str, str]]:
    if plan is None:
        return frame, {}, {}
    pseudonym_key, token_key = workspace.pii_keys()
    applied = apply_actions(frame, plan, pseudonym_key=pseudonym_key, token_key=token_key)
    if applied.vault and not seal:
        raise UsageError("tokenised columns need --seal so their vault is sealed in the workspace")
    return applied.frame, applied.actions, applied.vault


def _seal(
    workspace: Workspace, frame: Any, name: str, vault: dict[str, str], source: str
) -> dict[str, Any]:
    sink = io.BytesIO()
    frame.to_parquet(sink)
    sink.seek(0)
    parents: list[str] = []
    if not Path(source).exists():
        parents = [workspace.info(source).id]
    info = workspace.put(sink, "dataset", name, media_type=PARQUET_MEDIA_TYPE, parents=parents)
    sealed: dict[str, Any] = {"dataset": info.id}
    if vault:
        sealed["vault"] = workspace.seal_vault(name, vault, [info.id])
    return sealed


@app.command("reveal")
def reveal_command(
    ctx: typer.Context,
    tokens: list[str] = typer.Argument(..., help="Tokens to reveal."),
    vault: str = typer.Option(..., "--vault", help="The token vault artifact."),
    as_json: bool = JsonOption,
) -> None:
    """Reveal the originals of tokens (needs pii:reveal; audited)."""
    with open_workspace(ctx) as workspace:
        found = workspace.reveal(tokens, vault)
    if as_json:
        print_json(found)
        return
    for token, value in found.items():
        out.print(f"{token}\t{value if value is not None else '(unknown token)'}")


@app.command("screen")
def screen_command(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="File or artifact to screen."),
    label: str = typer.Option(..., "--label", help="The label column."),
    reference: str | None = typer.Option(None, "--reference", help="A trusted reference dataset."),
    action: str = typer.Option("remove", "--action", help="remove or downweight flagged rows."),
    max_flagged: float | None = typer.Option(
        None, "--max-flagged", min=0.0, max=1.0, help="Fail (exit 1) above this flagged share."
    ),
    seal: str | None = typer.Option(None, "--seal", help="Seal the cleaned data and the report."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the cleaned data (Parquet)."
    ),
    fmt: str | None = FormatOption,
    encoding: str = EncodingOption,
    as_json: bool = JsonOption,
) -> None:
    """Screen a training set for label flips, backdoors, out-of-range rows, outliers, duplicates."""
    from ..data.screening import ScreeningPolicy, screen

    if action not in ("remove", "downweight"):
        raise UsageError("--action must be remove or downweight")
    policy = ScreeningPolicy(
        label=label,
        action="remove" if action == "remove" else "downweight",
        max_flagged_share=max_flagged,
    )
    with _source(ctx, source, fmt, encoding) as (frame, workspace):
        trusted = None
        if reference is not None:
            with _source(ctx, reference, fmt, encoding) as (trusted, _):
                pass
        report, cleaned = screen(frame, policy, reference=trusted)
        result: dict[str, Any] = report.to_dict()
        if seal:
            holder = workspace
            with contextlib.ExitStack() as stack:
                if holder is None:
                    holder = stack.enter_context(open_workspace(ctx))
                result["sealed"] = _seal_screening(holder, cleaned, report.to_dict(), seal, source)
        if output is not None:
            cleaned.to_parquet(output)
            output.chmod(0o600)
    if as_json:
        print_json(result)
        return
    table = Table("detector", "rows flagged", box=None)
    for detector, rows in report.flagged.items():
        table.add_row(detector, str(len(rows)))
    print_table(table)
    for trigger in report.triggers[:5]:
        pattern = ", ".join(
            f"{c}={v}" for c, v in zip(trigger["columns"], trigger["values"], strict=True)
        )
        out.print(f"suspected trigger: {pattern} ({trigger['rows']} rows)")
    out.print(f"{report.rows} rows, {report.flagged_share:.2%} flagged ({action})")


def _seal_screening(
    workspace: Workspace, cleaned: Any, report: dict[str, Any], name: str, source: str
) -> dict[str, str]:
    import orjson

    parents = [] if Path(source).exists() else [workspace.info(source).id]
    sink = io.BytesIO()
    cleaned.to_parquet(sink)
    sink.seek(0)
    data = workspace.put(sink, "dataset", name, media_type=PARQUET_MEDIA_TYPE, parents=parents)
    body = orjson.dumps(report, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    summary = workspace.put(
        io.BytesIO(body), "report", f"{name}.screening", parents=[*parents, data.id]
    )
    return {"dataset": data.id, "report": summary.id}
