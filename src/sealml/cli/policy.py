"""``sealml policy show | approve``."""

from __future__ import annotations

import typer

from .common import JsonOption, err, open_workspace, out, print_json, styled

app = typer.Typer(
    help="The policy in force: roles, registry, serving and monitoring rules.", no_args_is_help=True
)


@app.command()
def show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Show the approved roles, registry rules, serving and monitoring settings, and whether
    sealml.toml proposes changes."""
    with open_workspace(ctx) as workspace:
        approved = workspace.approved
        pending = workspace.policy_pending
    assert approved is not None
    if as_json:
        print_json(
            {
                "roles": approved.roles,
                "registry": approved.registry.model_dump(),
                "serve": approved.serve.model_dump(),
                "monitor": approved.monitor.model_dump(),
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
    serve = approved.serve
    issuer = serve.jwt.issuer if serve.jwt else "none"
    answers = (
        f"probabilities rounded to {serve.round_digits} digits"
        if serve.output == "probability"
        else "labels only"
    )
    out.print(
        f"serving: answers {answers}, {serve.key_rate:g} requests/s per key, "
        f"batches of at most {serve.max_batch}, "
        f"JWT issuer {issuer}, client certificates "
        + ("required" if serve.client_ca else "not required")
    )
    monitor = approved.monitor
    rules = ", ".join(
        rule.name + (f" ({rule.severity}: {', '.join(rule.actions)})" if rule.actions else "")
        for rule in monitor.rules
    )
    destinations = [
        label
        for label, set_ in (("webhook", monitor.webhook_url), ("e-mail", monitor.smtp_host))
        if set_
    ]
    out.print(
        f"monitoring: alert rules {rules or 'none'}; alerts go to the ledger"
        + "".join(f", {d}" for d in destinations)
    )
    out.print(f"approved by {approved.approved_by} at {approved.approved_at}")
    if pending:
        err.print(
            "sealml.toml proposes other roles, registry rules, serving or monitoring settings; "
            "`sealml policy approve` puts them in force"
        )


@app.command()
def approve(ctx: typer.Context) -> None:
    """Put the roles, registry rules, serving and monitoring settings in sealml.toml into
    force (signed, audited)."""
    with open_workspace(ctx) as workspace:
        approved = workspace.approve_policy()
    out.print(
        f"approved the policy: roles {', '.join(sorted(approved.roles))}, registry rules, "
        f"serving and monitoring settings (sha256 {approved.digest[:16]})"
    )
