"""``sealml serve`` and ``sealml apikey create|ls|revoke``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ..clock import normalised, utc_after, utc_now
from ..config import resolve
from ..errors import UsageError
from ..serving.apikeys import ApiKey
from .common import JsonOption, err, open_workspace, out, print_json, print_table

if TYPE_CHECKING:
    from ..serving.tls import TlsFiles

app = typer.Typer(help="API keys for served models.", no_args_is_help=True)

_DURATION = re.compile(r"(\d{1,5})([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration_seconds(text: str, option: str) -> int:
    """``0``, ``45s``, ``30m``, ``12h`` or ``7d``, in seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise UsageError(f"{option} takes 0, 30m, 12h or 7d, not {text!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _expiry(text: str | None) -> str | None:
    """``30d``, ``12h`` or an ISO date/time, as an RFC 3339 UTC time."""
    if text is None:
        return None
    relative = _DURATION.fullmatch(text.strip())
    if relative and relative.group(2):  # a bare number is neither a duration nor a date
        return utc_after(_duration_seconds(text, "--expires"))
    try:
        return normalised(text)
    except ValueError:
        raise UsageError(f"--expires takes 30d, 12h or an ISO date, not {text!r}") from None


def _key_dict(key: ApiKey) -> dict[str, object]:
    state = "revoked" if key.revoked_at else "active"
    if state == "active" and key.expires_at and key.expires_at <= utc_now():
        state = "expired"
    if not key.verified:
        state = "unverified (edited or unsigned; refused: reissue it)"
    return {**vars(key), "scopes": list(key.scopes), "models": list(key.models), "state": state}


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A label for the key (who or what uses it)."),
    scope: list[str] = typer.Option(["predict"], "--scope", help="predict, explain, admin."),
    model: list[str] = typer.Option(["*"], "--model", help="Models it may use (default: all)."),
    expires: str | None = typer.Option(None, "--expires", help="30d, 12h or an ISO date."),
    as_json: bool = JsonOption,
) -> None:
    """Issue an API key. The key is printed once and never stored."""
    with open_workspace(ctx) as workspace:
        key, text = workspace.create_api_key(
            name, scopes=scope, models=model, expires_at=_expiry(expires)
        )
    if as_json:
        print_json({**_key_dict(key), "key": text})
        return
    err.print(f"API key {key.id} ({', '.join(key.scopes)}); shown once, store it now:")
    out.print(text)


@app.command("ls")
def ls(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """List issued keys (never their secrets)."""
    with open_workspace(ctx) as workspace:
        keys = [_key_dict(k) for k in workspace.api_keys()]
    if as_json:
        print_json(keys)
        return
    table = Table("id", "name", "state", "scopes", "models", "owner", "expires")
    for k in keys:
        table.add_row(
            str(k["id"]),
            str(k["name"]),
            str(k["state"]),
            ",".join(str(s) for s in k["scopes"]),  # type: ignore[attr-defined]
            ",".join(str(m) for m in k["models"]),  # type: ignore[attr-defined]
            str(k["owner"]),
            str(k["expires_at"] or "-"),
        )
    print_table(table)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    key_id: str = typer.Argument(..., help="The key's id (the part after sml_)."),
    reason: str = typer.Option(..., "--reason"),
) -> None:
    """Revoke a key; running servers refuse it within serve.poll_seconds."""
    with open_workspace(ctx) as workspace:
        key = workspace.revoke_api_key(key_id, reason)
    out.print(f"revoked API key {key.id} ({key.name})")


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    key_id: str = typer.Argument(..., help="The key's id (the part after sml_)."),
    grace: str = typer.Option(
        "1h", "--grace", help="How long the old key still works: 0, 30m, 12h or 7d."
    ),
    expires: str | None = typer.Option(
        None, "--expires", help="The new key's expiry (default: the old key's lifetime)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Replace a key without downtime: a new one now, the old one expiring after --grace."""
    seconds = _duration_seconds(grace, "--grace")
    with open_workspace(ctx) as workspace:
        new, text, old = workspace.rotate_api_key(key_id, seconds, _expiry(expires))
    if as_json:
        print_json({**_key_dict(new), "key": text, "replaces": _key_dict(old)})
        return
    err.print(
        f"API key {new.id} replaces {old.id}, which works until {old.expires_at}; "
        "the new key is shown once, store it now:"
    )
    out.print(text)


def serve(
    ctx: typer.Context,
    model: str = typer.Argument(
        ..., help="NAME, NAME@ALIAS or NAME@VERSION (default alias production)."
    ),
    host: str | None = typer.Option(None, "--host"),
    port: int | None = typer.Option(None, "--port", min=0, max=65535),
    workers: int | None = typer.Option(None, "--workers", min=1, max=64),
    cert: Path | None = typer.Option(None, "--cert", help="Server certificate chain (PEM)."),
    key: Path | None = typer.Option(None, "--key", help="Server private key (PEM)."),
    client_ca: Path | None = typer.Option(
        None, "--client-ca", help="Require client certificates signed by this CA (mutual TLS)."
    ),
    dev_tls: bool = typer.Option(
        False, "--dev-tls", help="Generate a local CA and server certificate (development)."
    ),
    insecure_http: bool = typer.Option(
        False, "--insecure-http", help="Serve plain HTTP (every log line says so)."
    ),
    redis: str | None = typer.Option(None, "--redis", help="Share rate limits through Redis."),
    freeze: bool = typer.Option(False, "--freeze", help="Freeze MODEL (503) instead of serving."),
    unfreeze: bool = typer.Option(False, "--unfreeze", help="Lift a freeze instead of serving."),
    reason: str | None = typer.Option(None, "--reason", help="Why (with --freeze/--unfreeze)."),
) -> None:
    """Serve a registered model over HTTPS.

    With authentication, rate limits, validation, hardened outputs, metrics, hot swap on
    promotion or rollback, and a kill switch."""
    from ..serving.server import Listen
    from ..serving.server import serve as run_server
    from ..serving.target import Target

    target = Target.parse(model)
    if freeze or unfreeze:
        if freeze and unfreeze:
            raise UsageError("give --freeze or --unfreeze, not both")
        if not reason:
            raise UsageError("--reason is required with --freeze/--unfreeze")
        with open_workspace(ctx) as workspace:
            workspace.freeze_model(target.name, reason, frozen=freeze)
        out.print(
            f"{target.name} {'frozen' if freeze else 'unfrozen'}: servers follow within seconds"
        )
        return
    with open_workspace(ctx) as workspace:
        settings = workspace.serve_settings
        given = {"host": host, "port": port, "workers": workers, "redis_url": redis}
        updates = {k: v for k, v in given.items() if v is not None}
        settings = settings.model_copy(update=updates)
        if settings.redis_url:
            from ..serving.limits import check_redis_url

            check_redis_url(settings.redis_url)  # one line now, not a failed worker later
        root = workspace.root
        ca = client_ca or (resolve(root, settings.client_ca) if settings.client_ca else None)
        configured = (
            (resolve(root, settings.tls_cert), resolve(root, settings.tls_key))
            if settings.tls_cert and settings.tls_key
            else None
        )
        tls = choose_tls(
            root, settings.host, cert=cert, key=key, dev_tls=dev_tls,
            insecure_http=insecure_http, configured=configured, client_ca=ca,
        )  # fmt: skip
        listen = Listen(settings.host, settings.port, tls, insecure_http, settings.workers)
        run_server(workspace, target, settings, listen)


def choose_tls(
    root: Path,
    host: str,
    *,
    cert: Path | None,
    key: Path | None,
    dev_tls: bool,
    insecure_http: bool,
    configured: tuple[Path, Path] | None = None,
    client_ca: Path | None = None,
) -> TlsFiles | None:
    """The TLS files a server uses, from its options: --cert/--key, --dev-tls, files set in
    sealml.toml, or none with --insecure-http (said aloud)."""
    from ..serving.tls import TlsFiles
    from ..serving.tls import dev_tls as make_dev_tls

    if sum((dev_tls, insecure_http, cert is not None or key is not None)) > 1:
        raise UsageError("choose one of --cert/--key, --dev-tls and --insecure-http")
    if insecure_http and client_ca is not None:
        raise UsageError("mutual TLS needs TLS; drop --insecure-http")
    tls: TlsFiles | None = None
    if dev_tls:
        made = make_dev_tls(root / ".sealml" / "serve-tls", host)
        tls = TlsFiles(made.cert, made.key, client_ca, made.ca)
        err.print(f"development TLS: clients trust {made.ca}")
    elif cert is not None or key is not None:
        if cert is None or key is None:
            raise UsageError("--cert and --key go together")
        tls = TlsFiles(cert, key, client_ca)
    elif configured is not None and not insecure_http:
        tls = TlsFiles(*configured, client_ca)
    if insecure_http:
        err.print("warning: serving plain HTTP without TLS (--insecure-http)")
    return tls
