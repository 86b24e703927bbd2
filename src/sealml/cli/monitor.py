"""``sealml monitor run``: drift of a served model's inputs and predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..data.tables import Limits, detect_format, parse_table, read_source
from ..errors import UsageError
from ..serving.target import Target
from .common import JsonOption, open_workspace, out, print_json, print_table, styled

app = typer.Typer(
    help="Monitoring: drift against the model's sealed reference.", no_args_is_help=True
)


@app.command("run")
def run(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="NAME, NAME@ALIAS or NAME@VERSION (default production)."),
    data: Path | None = typer.Option(
        None, "--data", help="A CSV, JSONL or Parquet file to check (default: the prediction logs)."
    ),
    window: str = typer.Option(
        "10000", "--window", help="Newest logged predictions: a count (10000) or a time (1h)."
    ),
    mode: str = typer.Option(
        "default", "--mode", help="default (significance and effect) or evidently."
    ),
    page: Path | None = typer.Option(None, "--html", help="Also write the HTML report here."),
    as_json: bool = JsonOption,
) -> None:
    """Compare recent inputs with the training reference. Exit 1 when a column drifted.

    Each column is compared on its own; the report is sealed and the run is in the
    ledger."""
    if mode not in ("default", "evidently"):
        raise UsageError("--mode is default or evidently")
    target = Target.parse(model)
    frame = _read(data) if data is not None else None
    rows, within = _window(window)
    with open_workspace(ctx) as workspace:
        outcome = workspace.monitor_check(
            target.name,
            target.ref,
            data=frame,
            window=rows,
            within=within,
            mode=mode,  # type: ignore[arg-type]
        )
    report = outcome.run.report
    if page is not None:
        page.write_text(outcome.page, encoding="utf-8")
    if as_json:
        print_json(
            {
                **report.to_dict(),
                "report_id": outcome.run.report_id,
                "figures": outcome.figures,
                "alerts": [a.to_dict() for a in outcome.alerts],
                "suppressed": outcome.suppressed,
                "incident": outcome.incident,
            }
        )
    else:
        table = Table("column", "kind", "statistic", "score", "threshold", "p (adjusted)", "PSI",
                      "drifted")  # fmt: skip
        for column in report.columns:
            table.add_row(
                column.column, column.kind, column.statistic, f"{column.score:.4f}",
                f"{column.threshold:g}",
                "-" if column.p_adjusted is None else f"{column.p_adjusted:.2g}",
                "-" if column.psi is None else f"{column.psi:.3f}",
                styled(("yes", "bold red")) if column.drifted else "no",
            )  # fmt: skip
        print_table(table)
        drifted = ", ".join(report.drifted) or "none"
        out.print(f"{report.current_rows} rows against {report.reference_rows}; drifted: {drifted}")
        for alert in outcome.alerts:
            out.print(f"alert {alert.severity}: {alert.rule} ({alert.metric} = {alert.value:g})")
        if outcome.suppressed:
            out.print(f"still cooling down: {', '.join(outcome.suppressed)}")
        if outcome.incident:
            out.print(f"incident {outcome.incident} opened: see sealml incident show")
    if report.drifted:
        raise typer.Exit(1)


@app.command("labels")
def labels_command(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="The model NAME the predictions came from."),
    path: Path = typer.Argument(..., help="CSV, JSONL or Parquet with request_id and label."),
) -> None:
    """Add ground truth that arrived after serving.

    Later runs measure accuracy on the labelled predictions (rule figures ``accuracy`` and
    ``accuracy_drop``)."""
    frame = _read(path)
    with open_workspace(ctx) as workspace:
        name = Target.parse(model).name
        artifact = workspace.add_labels(name, frame)
        measured = workspace.labelled_accuracy(name)
    summary = "no logged prediction matches yet"
    if measured is not None:
        summary = f"accuracy {measured[0]:.3f} on {measured[1]} labelled predictions"
    out.print(f"labels sealed as {artifact}; {summary}")


MAX_WINDOW_ROWS = 1_000_000


def _window(text: str) -> tuple[int, float | None]:
    """``5000`` (rows) or ``1h`` (the last hour, up to a million rows)."""
    from ..monitoring.watch import parse_every

    value = text.strip()
    if value.isdigit() and 0 < int(value) <= MAX_WINDOW_ROWS:
        return int(value), None
    try:
        return MAX_WINDOW_ROWS, parse_every(value)
    except UsageError:
        raise UsageError(
            f"--window takes a row count from 1 to {MAX_WINDOW_ROWS:,} or a time "
            f"such as 30s, 15m, 1h or 1d, not {text[:40]!r}"
        ) from None


def _read(path: Path) -> Any:
    limits = Limits()
    fmt = detect_format(path.name)
    return parse_table(read_source(path, limits, text=fmt != "parquet"), fmt, str(path),
                       limits=limits)  # fmt: skip


@app.command("watch")
def watch_command(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="NAME, NAME@ALIAS or NAME@VERSION (default production)."),
    every: str = typer.Option("1h", "--every", help="30s, 15m, 1h, 1d."),
    window: str = typer.Option(
        "10000", "--window", help="Newest logged predictions: a count (10000) or a time (1h)."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on 127.0.0.1."
    ),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after this many runs."),
) -> None:
    """Run the monitoring checks on a schedule and export Prometheus metrics.

    Alerts, incidents and containment work as in ``monitor run``; drift scores and alert
    counts are exported."""
    from prometheus_client import start_http_server

    from ..monitoring.watch import WatchMetrics, parse_every, watch

    seconds = parse_every(every)
    rows, within = _window(window)
    target = Target.parse(model)
    metrics = WatchMetrics()
    if metrics_port is not None:
        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
    with open_workspace(ctx) as workspace:

        def check() -> Any:
            workspace.refresh_actor()  # disabled, re-keyed or demoted meanwhile: no run
            return workspace.monitor_check(target.name, target.ref, window=rows, within=within)

        watch(
            check,
            metrics,
            target.name,
            seconds,
            iterations=count,
            report=lambda line: out.print(line),
        )


incidents = typer.Typer(help="Incidents opened by critical alerts.", no_args_is_help=True)


@incidents.command("ls")
def incident_ls(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Every incident, newest first."""
    with open_workspace(ctx) as workspace:
        found = workspace.incidents()
    if as_json:
        print_json(found)
        return
    table = Table("id", "opened", "model", "rules", "actions", "closed")
    for item in found:
        actions = ", ".join(f"{a['step']} {a['outcome']}" for a in item["actions"]) or "-"
        closed = item["closed"]["at"] if item["closed"] else "open"
        table.add_row(item["id"], str(item["opened_at"]), f"{item['model']} v{item['version']}",
                      ", ".join(item["rules"]), actions, str(closed))  # fmt: skip
    print_table(table)


@incidents.command("show")
def incident_show(ctx: typer.Context, incident: str = typer.Argument(...)) -> None:
    """One incident: rules, figures, evidence (the sealed drift report), actions, closure."""
    with open_workspace(ctx) as workspace:
        print_json(workspace.incident(incident))


@incidents.command("close")
def incident_close(
    ctx: typer.Context,
    incident: str = typer.Argument(...),
    note: str = typer.Option(..., "--note", help="What was found and done."),
) -> None:
    """Close an incident (lift a freeze apart, with sealml serve NAME --unfreeze)."""
    with open_workspace(ctx) as workspace:
        workspace.close_incident(incident, note)
    out.print(f"incident {incident} closed")


def drill(
    ctx: typer.Context,
    scenario: str = typer.Argument(
        ...,
        help="tampered-model, poisoned-batch, drifted-stream, stolen-key or rolled-back-ledger.",
    ),
    model: str = typer.Option(..., "--model", help="NAME[@REF] the scenario targets."),
    as_json: bool = JsonOption,
) -> None:
    """Simulate an incident on a copy of the workspace. Exit 1 unless detected and contained.

    Never the workspace itself. Reports whether it was detected, by which control, how
    fast, and whether containment held."""
    target = Target.parse(model)
    with open_workspace(ctx) as workspace:
        result = workspace.drill(scenario, target.name, target.ref)
    if as_json:
        print_json(result.to_dict())
    else:
        verdict = "detected" if result.detected else ("NOT detected", "bold red")
        held = "contained" if result.contained else ("NOT contained", "bold red")
        timing = f" by {result.control} in {result.seconds:.3f} s; "
        out.print(styled(f"{scenario}: ", verdict, timing, held))
        out.print(f"  {result.detail}")
    if not (result.detected and result.contained):
        raise typer.Exit(1)
