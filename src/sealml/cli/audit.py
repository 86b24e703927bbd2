"""``sealml audit verify | show | export | prove | verify-proof | checkpoint | consistency``."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import typer
from rich.table import Table

from ..clock import normalised
from ..config import CONFIG_NAME, load_config
from ..errors import ConfigError, IntegrityError, NotFoundError, UsageError
from ..ledger import EventFilter, NoteVerifier
from ..ledger.log import OUTCOMES
from ..ledger.proofs import check_consistency, check_inclusion
from ..workspace.core import find_root
from .common import (
    JsonOption,
    open_workspace,
    out,
    print_json,
    print_table,
    state,
    styled,
    write_or_print,
)

app = typer.Typer(help="The tamper-evident audit ledger.", no_args_is_help=True)

_MAX_INPUT = 1 << 20


def _read_text(path: Path, what: str) -> str:
    try:
        if path.stat().st_size > _MAX_INPUT:
            raise UsageError(f"{what} {path} is too large")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not UTF-8 text") from None
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None


def _timestamp(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    try:
        return normalised(value)
    except ValueError:
        raise UsageError(
            f"{option} must be an ISO 8601 date or time, e.g. 2026-11-22T10:00"
        ) from None


def _verifier(ctx: typer.Context, vkey: str | None, vkey_file: Path | None) -> NoteVerifier:
    if vkey:
        return NoteVerifier.decode(vkey)
    if vkey_file:
        return NoteVerifier.decode(_read_text(vkey_file, "verifier key file"))
    root = find_root(state(ctx).workspace)
    try:
        return NoteVerifier.decode(load_config(root / CONFIG_NAME).ledger.verifier_key)
    except (ConfigError, NotFoundError):
        raise UsageError("give --vkey or --vkey-file (no workspace here to take it from)") from None


VkeyOption = typer.Option(None, "--vkey", help="The workspace's checkpoint verifier key.")
VkeyFileOption = typer.Option(None, "--vkey-file", help="A file holding the verifier key.")


@app.command("verify")
def verify(
    ctx: typer.Context,
    trusted: list[Path] = typer.Option(
        [], "--trusted", help="A checkpoint you saved earlier; the ledger must extend it."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Recompute every event hash, link and Merkle root; check every signed checkpoint."""
    notes = [_read_text(path, "checkpoint file") for path in trusted]
    with open_workspace(ctx) as workspace:
        report = workspace.audit_verify(notes)
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "events": report.events,
                "checkpoints": report.checkpoints,
                "latest_checkpoint": report.latest_checkpoint,
                "unanchored": report.unanchored,
                "root": base64.b64encode(report.root).decode(),
                "problems": report.problems,
            }
        )
    else:
        for problem in report.problems:
            out.print(styled(("FAILED", "red"), f"  {problem}"))
        if report.ok:
            out.print(
                f"ledger verified: {report.events} events, {report.checkpoints} checkpoints, "
                f"root {base64.b64encode(report.root).decode()}"
            )
            if report.unanchored:
                out.print(f"note: {report.unanchored} newest event(s) not yet in a checkpoint")
    if not report.ok:
        raise IntegrityError("ledger verification failed")


def _filter(
    principal: str | None,
    action: str | None,
    resource: str | None,
    outcome: str | None,
    since: str | None,
    until: str | None,
) -> EventFilter:
    if outcome is not None and outcome not in OUTCOMES:
        raise UsageError(f"--outcome is one of {', '.join(OUTCOMES)}, not {outcome[:40]!r}")
    return EventFilter(
        principal=principal,
        action=action,
        resource=resource,
        outcome=outcome,
        since=_timestamp(since, "--since"),
        until=_timestamp(until, "--until"),
    )


PrincipalOption = typer.Option(None, "--principal", help="Only events by this principal.")
ActionOption = typer.Option(
    None, "--action", help="Only this action (a trailing * matches a prefix)."
)
ResourceOption = typer.Option(None, "--resource", help="Only this resource, e.g. artifact:ID.")
OutcomeOption = typer.Option(None, "--outcome", help="ok, denied or failed.")
SinceOption = typer.Option(None, "--since", help="From this time (ISO 8601, UTC if no zone).")
UntilOption = typer.Option(None, "--until", help="Before this time.")


@app.command("show")
def show(
    ctx: typer.Context,
    principal: str | None = PrincipalOption,
    action: str | None = ActionOption,
    resource: str | None = ResourceOption,
    outcome: str | None = OutcomeOption,
    since: str | None = SinceOption,
    until: str | None = UntilOption,
    limit: int = typer.Option(
        200, "--limit", min=1, max=1_000_000, help="At most this many events."
    ),
    latest: bool = typer.Option(
        False, "--latest", help="The latest LIMIT events (still shown oldest first)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Show events, oldest first."""
    where = _filter(principal, action, resource, outcome, since, until)
    with open_workspace(ctx) as workspace:
        events = workspace.audit_events(where, limit, newest_first=latest)
    if latest:
        events.reverse()
    rows = [event.fields() for event in events]
    if as_json:
        print_json(rows)
        return
    table = Table("seq", "time", "principal", "action", "resource", "outcome", "details", box=None)
    for row in rows:
        colour = {"ok": "green", "denied": "red", "failed": "red"}.get(row["outcome"], "white")
        table.add_row(
            str(row["seq"]),
            row["ts"][:19].replace("T", " "),
            row["principal"],
            row["action"],
            row["resource"],
            styled((row["outcome"], colour)),
            ", ".join(f"{k}={v}" for k, v in row["details"].items()),
        )
    print_table(table)


@app.command("export")
def export(
    ctx: typer.Context,
    output: Path | None = typer.Option(None, "-o", "--output", help="File (default stdout)."),
    principal: str | None = PrincipalOption,
    action: str | None = ActionOption,
    resource: str | None = ResourceOption,
    outcome: str | None = OutcomeOption,
    since: str | None = SinceOption,
    until: str | None = UntilOption,
) -> None:
    """Write events as JSON lines for a SIEM (each with its Merkle leaf hash)."""
    where = _filter(principal, action, resource, outcome, since, until)
    with open_workspace(ctx) as workspace:
        if output is None:
            workspace.audit_export(sys.stdout, where)
            return
        with output.open("w", encoding="utf-8") as sink:
            output.chmod(0o600)
            count = workspace.audit_export(sink, where)
    typer.echo(f"exported {count} event(s) to {output}", err=True)


@app.command("checkpoint")
def checkpoint(
    ctx: typer.Context,
    output: Path | None = typer.Option(None, "-o", "--output", help="Save the note to a file."),
) -> None:
    """Print the latest signed checkpoint. Keep copies elsewhere to detect rollbacks."""
    with open_workspace(ctx) as workspace:
        note = workspace.audit_checkpoint()
    write_or_print(note, output)
    if output is not None:
        typer.echo(f"wrote the latest checkpoint to {output}", err=True)


@app.command("prove")
def prove(
    ctx: typer.Context,
    seq: int = typer.Argument(..., min=0, max=2**62, help="Event sequence number."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the proof here."),
) -> None:
    """Print an inclusion proof of one event; check it offline with `audit verify-proof`."""
    with open_workspace(ctx) as workspace:
        proof = workspace.audit_prove(seq)
    write_or_print(proof, output)


@app.command("verify-proof")
def verify_proof(
    ctx: typer.Context,
    proof: Path = typer.Argument(..., help="A proof written by `audit prove`."),
    vkey: str | None = VkeyOption,
    vkey_file: Path | None = VkeyFileOption,
    as_json: bool = JsonOption,
) -> None:
    """Check an inclusion proof offline against the signed checkpoint it carries."""
    fields, checkpoint = check_inclusion(
        _read_text(proof, "proof"), _verifier(ctx, vkey, vkey_file)
    )
    if as_json:
        print_json({"ok": True, "event": fields, "tree_size": checkpoint.size})
    else:
        out.print(
            f"event {fields['seq']} ({fields['action']} by {fields['principal']}) is included "
            f"in the signed tree of size {checkpoint.size}"
        )


@app.command("consistency")
def consistency(
    ctx: typer.Context,
    old: Path = typer.Argument(..., help="A checkpoint note saved earlier."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the proof here."),
) -> None:
    """Prove that the current ledger extends a checkpoint saved earlier (exit 1 if not)."""
    note = _read_text(old, "checkpoint file")
    with open_workspace(ctx) as workspace:
        proof = workspace.audit_consistency(note)
    write_or_print(proof, output)


@app.command("verify-consistency")
def verify_consistency(
    ctx: typer.Context,
    proof: Path = typer.Argument(..., help="A proof written by `audit consistency`."),
    vkey: str | None = VkeyOption,
    vkey_file: Path | None = VkeyFileOption,
    old_vkey: str | None = typer.Option(
        None,
        "--old-vkey",
        help="The verifier key the old checkpoint was signed with, when the workspace key "
        "was rotated since (default: the same key).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Check a consistency proof offline."""
    earlier = NoteVerifier.decode(old_vkey) if old_vkey else None
    old, new = check_consistency(
        _read_text(proof, "proof"), _verifier(ctx, vkey, vkey_file), earlier
    )
    if as_json:
        print_json({"ok": True, "old_size": old.size, "new_size": new.size})
    else:
        out.print(f"the tree of size {new.size} extends the tree of size {old.size}")


@app.command("vkey")
def vkey(ctx: typer.Context) -> None:
    """Print the workspace's checkpoint verifier key."""
    root = find_root(state(ctx).workspace)
    out.print(load_config(root / CONFIG_NAME).ledger.verifier_key)
