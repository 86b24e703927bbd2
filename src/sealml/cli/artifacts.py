"""``sealml put | get | ls | verify``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..data.tables import media_type_of
from ..errors import IntegrityError, UsageError
from ..store.artifacts import ArtifactInfo
from .common import JsonOption, human_size, open_workspace, out, print_json, print_table, styled
from .progress import CountingReader, transfer


def _show(info: ArtifactInfo, verb: str) -> None:
    out.print(
        styled(
            f"{verb} {info.kind} ", (info.name, "bold"), f"  id {info.id}  {human_size(info.size)}"
        )
    )


def put(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="File to seal."),
    kind: str = typer.Option(..., "--kind", help="dataset, model, report or other."),
    name: str | None = typer.Option(None, "--name", help="Name (default: the file name)."),
    media_type: str | None = typer.Option(None, "--media-type", help="IANA media type."),
    parent: list[str] = typer.Option([], "--parent", help="Artifact this one derives from."),
    as_json: bool = JsonOption,
) -> None:
    """Seal FILE: hash, encrypt, sign, store and audit it in one pass."""
    if not file.is_file():
        raise UsageError(f"{file} is not a readable file")
    with (
        open_workspace(ctx) as workspace,
        file.open("rb", buffering=0) as handle,
        transfer(f"sealing {file.name}", file.stat().st_size) as advance,
    ):
        info = workspace.put(
            CountingReader(handle, advance),
            kind,
            name or file.name,
            media_type=media_type or media_type_of(file.name),
            parents=parent,
        )
    if as_json:
        print_json(info.to_dict())
    else:
        _show(info, "sealed")


def get(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Artifact id, id prefix or name."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the plaintext."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
    as_json: bool = JsonOption,
) -> None:
    """Unseal an artifact to OUTPUT after checking its signature, every segment and its digest."""
    with open_workspace(ctx) as workspace:
        size = workspace.info(ref).size
        with transfer(f"unsealing {ref}", size) as advance:
            info = workspace.get(ref, output, overwrite=force, progress=advance)
    if as_json:
        print_json({**info.to_dict(), "output": str(output)})
    else:
        _show(info, f"wrote {output} from")


def ls(
    ctx: typer.Context,
    kind: str | None = typer.Option(None, "--kind", help="Only this kind."),
    name: str | None = typer.Option(None, "--name", help="Only artifacts with this name."),
    as_json: bool = JsonOption,
) -> None:
    """List artifacts you may read, newest first."""
    with open_workspace(ctx) as workspace:
        infos = workspace.ls(kind, name)
    if as_json:
        print_json([info.to_dict() for info in infos])
        return
    table = Table("id", "kind", "name", "size", "creator", "created", "status", box=None)
    for info in infos:
        table.add_row(
            info.id[:12],
            info.kind,
            info.name,
            human_size(info.size),
            info.creator,
            info.created_at[:19].replace("T", " "),
            "shredded" if info.shredded_at else "sealed",
        )
    print_table(table)


def verify(
    ctx: typer.Context,
    ref: str | None = typer.Argument(None, help="Artifact id or name (omit with --all)."),
    all_: bool = typer.Option(False, "--all", help="Verify every artifact and the ledger links."),
    as_json: bool = JsonOption,
) -> None:
    """Check signatures, data keys, every sealed segment and digests. Exit 1 on any failure."""
    if (ref is None) == (not all_):
        raise UsageError("give an artifact id or name, or --all")
    with open_workspace(ctx) as workspace:
        if ref is not None:
            info = workspace.verify(ref)
            if as_json:
                print_json({**info.to_dict(), "status": "shredded" if info.shredded_at else "ok"})
            else:
                _show(info, "verified")
            return
        report = workspace.verify_store()
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "artifacts": [
                    {"id": c.info.id, "name": c.info.name, "status": c.status, "problem": c.problem}
                    for c in report.checks
                ],
                "problems": report.problems,
                "orphan_blobs": report.orphan_blobs,
            }
        )
    else:
        for check in report.checks:
            word, style = {"ok": ("ok", "green"), "shredded": ("shredded", "yellow")}.get(
                check.status, ("FAILED", "red")
            )
            detail = f"  {check.problem}" if check.problem else ""
            line = f"  {check.info.id[:12]}  {check.info.name}{detail}"
            out.print(styled((f"{word:>8}", style), line))
        for problem in report.problems:
            out.print(styled(("FAILED", "red"), f"  {problem}"))
        if report.orphan_blobs:
            out.print(f"note: {report.orphan_blobs} unreferenced blob(s) from interrupted puts")
        status = "all artifacts verified" if report.ok else "verification FAILED"
        out.print(f"{len(report.checks)} artifact(s): {status}")
    if not report.ok:
        raise IntegrityError("verification failed")
