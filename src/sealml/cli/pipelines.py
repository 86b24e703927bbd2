"""``sealml run | lineage | provenance verify | provenance export``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..errors import UsageError
from ..pipeline.loader import load_pipeline
from ..workspace.lineage import LineageGraph
from .common import JsonOption, open_workspace, out, print_json, print_table, styled

app = typer.Typer(help="Signed provenance of pipeline outputs.", no_args_is_help=True)


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param takes KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except (ValueError, RecursionError):  # not JSON (or absurdly nested): a string
            params[key] = value
    return params


def run(
    ctx: typer.Context,
    pipeline_file: Path = typer.Argument(..., help="A Python file defining `pipeline`."),
    param: list[str] = typer.Option([], "--param", help="KEY=VALUE (JSON or text); repeatable."),
    executor: str = typer.Option("local", "--executor", help="local, sandbox or ray."),
    as_json: bool = JsonOption,
) -> None:
    """Run a pipeline: verify inputs, run or reuse each stage, seal outputs with provenance."""
    params = _parse_params(param)
    loaded = load_pipeline(pipeline_file)
    with open_workspace(ctx) as workspace:
        report = workspace.run_pipeline(loaded, executor, params)
        names = {i: workspace.info(i).digest for i in report.artifacts.values()}
    if as_json:
        print_json({**report.to_dict(), "digests": names})
        return
    table = Table("stage", "status", "seconds", "outputs", "log", box=None)
    for stage in report.stages:
        table.add_row(
            stage.stage,
            stage.status,
            f"{stage.seconds:.2f}",
            ", ".join(f"{n}={i[:12]}" for n, i in sorted(stage.outputs.items())),
            stage.log[:12] if stage.log else "-",
        )
    print_table(table)
    out.print(f"run {report.run_id} of {report.pipeline} on {report.executor}: done")


def _render_tree(graph: LineageGraph) -> Tree:
    def label(artifact_id: str) -> Text:
        info = graph.nodes.get(artifact_id)
        if info is None:
            return styled(f"{artifact_id[:12]} (missing)")
        mark = (" attested", "green") if artifact_id in graph.attested else ""
        return styled(f"{info.name} ", (f"{info.kind} {artifact_id[:12]}", "dim"), mark)

    parents: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    for parent, child in graph.edges:
        parents.setdefault(child, []).append(parent)
        children.setdefault(parent, []).append(child)
    root = Tree(label(graph.root))

    def grow(node: Tree, artifact_id: str, links: dict[str, list[str]], seen: set[str]) -> None:
        for linked in sorted(links.get(artifact_id, [])):
            if linked in seen:
                continue
            grow(node.add(label(linked)), linked, links, seen | {linked})

    if graph.root in parents:
        grow(root.add(styled(("came from", "bold"))), graph.root, parents, {graph.root})
    if graph.root in children:
        grow(root.add(styled(("used by", "bold"))), graph.root, children, {graph.root})
    return root


def _dot(graph: LineageGraph) -> str:
    lines = ["digraph lineage {", "  rankdir=LR;"]
    for artifact_id, info in sorted(graph.nodes.items()):
        style = ", style=bold" if artifact_id == graph.root else ""
        lines.append(f'  "{artifact_id}" [label="{info.name}\\n{info.kind}"{style}];')
    for parent, child in graph.edges:
        lines.append(f'  "{parent}" -> "{child}";')
    lines.append("}")
    return "\n".join(lines)


def lineage(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Artifact id, id prefix or name."),
    output_format: str = typer.Option("text", "--format", help="text, json or dot."),
    as_json: bool = JsonOption,
) -> None:
    """Show everything an artifact came from and everything made from it."""
    if as_json:
        output_format = "json"
    if output_format not in ("text", "json", "dot"):
        raise UsageError("--format must be text, json or dot")
    with open_workspace(ctx) as workspace:
        graph = workspace.lineage(ref)
    if output_format == "json":
        print_json(graph.to_dict())
    elif output_format == "dot":
        out.print(_dot(graph))
    else:
        out.print(_render_tree(graph))


@app.command("verify")
def verify_provenance(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Artifact id, id prefix or name."),
    as_json: bool = JsonOption,
) -> None:
    """Walk the chain back to the sources; check every envelope, digest and signer."""
    with open_workspace(ctx) as workspace:
        steps = workspace.verify_provenance(ref)
    if as_json:
        print_json(
            [
                {
                    "artifact": s.artifact.id,
                    "name": s.artifact.name,
                    "status": s.status,
                    "attestation": s.attestation,
                    "signer": s.signer,
                    "inputs": s.inputs,
                }
                for s in steps
            ]
        )
        return
    for step in steps:
        how = f"attested by {step.signer}" if step.status == "attested" else "source"
        where = f"{step.artifact.name} ({step.artifact.id[:12]})"
        out.print(styled(("ok", "green"), f"  {where}: {how}"))
    out.print(f"provenance verified: {len(steps)} artifact(s) back to the sources")


@app.command("export")
def export_openlineage(
    ctx: typer.Context,
    output: Path | None = typer.Option(None, "-o", "--output", help="File (default stdout)."),
) -> None:
    """Write OpenLineage RunEvents (JSON lines) for every executed stage."""
    with open_workspace(ctx) as workspace:
        events = workspace.openlineage_events()
    text = "".join(json.dumps(event, sort_keys=True) + "\n" for event in events)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        output.chmod(0o600)
