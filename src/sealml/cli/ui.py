"""``sealml ui``: the read-only dashboard."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UsageError
from ..urls import is_loopback_host
from .common import err, open_workspace
from .serving import choose_tls


def ui(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8600, "--port", min=0, max=65535),
    cert: Path | None = typer.Option(None, "--cert", help="Server certificate chain (PEM)."),
    key: Path | None = typer.Option(None, "--key", help="Server private key (PEM)."),
    dev_tls: bool = typer.Option(
        False, "--dev-tls", help="Generate a local CA and server certificate (development)."
    ),
    insecure_http: bool = typer.Option(
        False, "--insecure-http", help="Plain HTTP; allowed only on a loopback address."
    ),
    idle_minutes: int = typer.Option(
        15, "--idle-minutes", min=1, max=24 * 60, help="Sign browsers out after this idle time."
    ),
    workers: int = typer.Option(
        4, "--workers", min=1, max=32, help="Pages served at once (a workspace object each)."
    ),
) -> None:
    """Serve the read-only dashboard: models, gates, model cards, incidents, the ledger.

    People sign in with their sealml user name, password and TOTP code, and see what their
    roles allow. Start it with the keystore passphrase (as for `sealml serve`) so model
    cards can be read."""
    from ..serving.server import Listen
    from ..ui.server import run

    if insecure_http and not is_loopback_host(host):
        raise UsageError(
            "--insecure-http would send passwords in clear text; use it only on a loopback "
            "address, or give --cert/--key or --dev-tls"
        )
    with open_workspace(ctx, act=False) as workspace:
        # Unlocked before serving: model cards need it, and every event is then anchored.
        _ = workspace.keys
        tls = choose_tls(
            workspace.root, host, cert=cert, key=key, dev_tls=dev_tls, insecure_http=insecure_http
        )
        listen = Listen(host, port, tls, insecure_http)
        err.print(f"dashboard on {listen.url} (Ctrl-C to stop)")
        run(workspace, listen, idle_minutes, workers)
