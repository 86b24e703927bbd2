"""The ``sealml`` entry point: commands, global options and error reporting.

Exit codes: 0 success; 1 a failed check (tamper, bad signature, broken ledger); 2 bad input
(usage, unknown artifact, wrong passphrase or password, permission denied, bad config);
70 an internal error (a bug); 130 interrupted.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

import typer

from ..errors import SealmlError
from . import (
    artifacts,
    audit,
    backup,
    data,
    doctor,
    keys,
    models,
    monitor,
    pipelines,
    policy,
    serving,
    ui,
    users,
)
from .common import State, err, styled

app = typer.Typer(
    name="sealml",
    help="Secure ML pipelines: sealed artifacts, signed provenance, tamper-evident audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    workspace: Path | None = typer.Option(
        None,
        "--workspace",
        "-w",
        envvar="SEALML_WORKSPACE",
        help="Workspace folder (default: the current folder).",
    ),
) -> None:
    """sealml: machine-learning pipelines that are secure by default."""
    ctx.obj = State(workspace=workspace)


app.command()(users.init)
app.command()(users.login)
app.command()(users.logout)
app.command()(users.whoami)
app.command()(artifacts.put)
app.command()(artifacts.get)
app.command()(artifacts.ls)
app.command()(artifacts.verify)
app.command()(pipelines.run)
app.command()(pipelines.lineage)
app.command()(models.scan)
app.command(name="gate")(models.gate_command)
app.command()(serving.serve)
app.command()(ui.ui)
app.command()(monitor.drill)
app.command()(doctor.doctor)
app.command()(backup.backup)
app.command()(backup.restore)
app.add_typer(users.app, name="user")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(policy.app, name="policy")
app.add_typer(pipelines.app, name="provenance")
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="model")
app.add_typer(serving.app, name="apikey")
app.add_typer(monitor.app, name="monitor")
app.add_typer(monitor.incidents, name="incident")


@app.command()
def demo(
    keep: Path | None = typer.Option(
        None, "--keep", help="Create the demo workspace here and keep it (default: a temp dir)."
    ),
    walkthrough: bool = typer.Option(
        False, "--walkthrough", help="The guided tour of sealing, tampering and proofs instead."
    ),
) -> None:
    """Run the whole secure pipeline on the Adult data shipped with sealml.

    Pinned ingest, validation, PII handling, poisoning screening, watermarked training,
    robustness, fairness and privacy evaluation, gates, signing, two-person promotion,
    model card."""
    from ..demo import run_demo

    run_demo(keep=keep, walkthrough=walkthrough)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Join each docstring paragraph's lines: Typer keeps a docstring's single line breaks
    in help pages, so a paragraph wrapped at 92 columns in the source came out ragged;
    joined, rich wraps it to the terminal."""
    for info in typer_app.registered_commands:
        text = info.help or inspect.getdoc(info.callback) or ""
        paragraphs = (" ".join(line.strip() for line in p.splitlines()) for p in text.split("\n\n"))
        info.help = "\n\n".join(paragraphs)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_reflow_help(app)


def _fail(message: str, code: int) -> None:
    err.print(styled(("error: ", "bold red"), message.splitlines()[0] if message else ""))
    sys.exit(code)


def _usage_message(error: Exception) -> str:
    format_message = getattr(error, "format_message", None)
    message = format_message() if callable(format_message) else str(error)
    ctx = getattr(error, "ctx", None)
    path = getattr(ctx, "command_path", None)
    return f"{message} (see `{path} --help`)" if path else str(message)


def run() -> None:
    """Console-script entry point: never shows a traceback for a user error."""
    os.umask(0o077)
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        _fail("interrupted", 130)
    except typer.TyperException as error:  # usage errors: bad option, argument, value
        _fail(_usage_message(error), int(getattr(error, "exit_code", 2)))
    except SealmlError as error:
        _fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        _fail(f"{error.strerror or type(error).__name__}{where}", 2)
    except Exception as error:
        if os.environ.get("SEALML_DEBUG"):
            raise
        _fail(
            f"internal error ({type(error).__name__}); this is a bug. "
            "Re-run with SEALML_DEBUG=1 for details",
            70,
        )
    sys.exit(code if isinstance(code, int) else 0)
