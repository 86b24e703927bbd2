"""``sealml policy show | approve``."""

from __future__ import annotations

import typer

from .common import JsonOption, err, open_workspace, out, print_json, styled

app = typer.Typer(help="The role → permission policy in force.", no_args_is_help=True)


@app.command()
def show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Show the approved roles and registry rules, and whether sealml.toml proposes changes."""
    with open_workspace(ctx) as workspace:
        approved = workspace.approved
        pending = workspace.policy_pending
    assert approved is not None
    if as_json:
        print_json(
            {
                "roles": approved.roles,
                "registry": approved.registry.model_dump(),
                "approved_by": approved.approved_by,
                "approved_at": approved.approved_at,
                "sha256": approved.digest,
                "pending_changes": pending,
            }
        )
        return
    for role, patterns in sorted(approved.roles.items()):
        out.print(styled((role, "bold"), f": {', '.join(patterns)}"))
    registry = approved.registry
    out.print(f"two-person rule on aliases: {', '.join(registry.two_person_aliases) or 'none'}")
    for alias, gate in sorted(registry.gates.items()):
        out.print(styled("gate ", (alias, "bold"), f": {gate.model_dump()}"))
    out.print(f"approved by {approved.approved_by} at {approved.approved_at}")
    if pending:
        err.print(
            "sealml.toml proposes other roles or registry rules; "
            "`sealml policy approve` puts them in force"
        )


@app.command()
def approve(ctx: typer.Context) -> None:
    """Put the roles and registry rules in sealml.toml into force (signed, audited)."""
    with open_workspace(ctx) as workspace:
        approved = workspace.approve_policy()
    out.print(f"approved roles {', '.join(sorted(approved.roles))} (sha256 {approved.digest[:16]})")
