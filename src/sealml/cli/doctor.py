"""``sealml doctor``: the workspace's health at a glance."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import JsonOption, open_workspace, out, print_json, print_table, styled

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def doctor(
    ctx: typer.Context,
    packages: bool = typer.Option(
        False,
        "--packages",
        help="Also hash every installed package's files against the RECORD its installer "
        "wrote (a supply-chain check; seconds per GiB installed).",
    ),
    advisories: Path | None = typer.Option(
        None,
        "--advisories",
        help="Also look the installed packages up in an offline OSV copy (PyPI's all.zip "
        "or a folder of records).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Check the workspace's health and say what to do. Exit 1 if a check fails.

    Private files, database schema, sealed blobs present at their size, the key
    provider holding every KEK in use, interrupted writes, the audit ledger, unapproved
    policy, the development TLS certificate and free disk space. Reads only; `sealml
    verify --all` decrypts and checks every artifact."""
    from ..doctor import diagnose
    from ..provenance.advisories import AdvisoryDatabase

    database = AdvisoryDatabase.load(advisories) if advisories is not None else None
    with open_workspace(ctx) as workspace:
        findings = diagnose(workspace, packages=packages, advisories=database)
    healthy = all(f.status != "fail" for f in findings)
    if as_json:
        print_json({"healthy": healthy, "checks": [f.to_dict() for f in findings]})
    else:
        table = Table("check", "status", "detail")
        for finding in findings:
            table.add_row(
                finding.check, styled((finding.status, _STYLE[finding.status])), finding.detail
            )
        print_table(table)
        out.print(
            "healthy" if healthy else styled(("not healthy", "bold red"), ": see what failed")
        )
    if not healthy:
        raise typer.Exit(1)
