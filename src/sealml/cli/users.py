"""``sealml init | login | logout | whoami | user ...``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..clock import utc_now
from ..crypto.kdf import DEFAULT_PARAMS, FAST_PARAMS
from ..crypto.secret import Secret
from ..errors import UsageError
from ..fsutil import create_private
from ..keys.pkcs11 import TokenSettings
from ..store.s3 import S3Location
from ..workspace import Workspace
from ..workspace.core import HSM_PIN_ENV, find_root
from . import credentials
from .common import JsonOption, open_workspace, out, print_json, print_table, state, styled

app = typer.Typer(help="Principals: users and services.", no_args_is_help=True)
NEW_PASSWORD_ENV = "SEALML_NEW_PASSWORD"  # noqa: S105 (a variable name)


def init(
    ctx: typer.Context,
    directory: Path | None = typer.Argument(
        None, help="Folder (default: the workspace option or .)."
    ),
    name: str = typer.Option("sealml", "--name", help="A label for the workspace."),
    admin: str = typer.Option("admin", "--admin", help="Name of the first admin principal."),
    insecure_fast_kdf: bool = typer.Option(
        False,
        "--insecure-fast-kdf",
        help="Cheap Argon2id parameters, for throwaway test workspaces only.",
    ),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help="An empty PostgreSQL database (postgresql+psycopg://user@host/db; the password "
        "in ~/.pgpass or PGPASSWORD) instead of the workspace's own SQLite file.",
    ),
    hsm_module: Path | None = typer.Option(
        None,
        "--hsm-module",
        help="A PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so): keep the "
        "key-encryption keys in its token (--hsm-token), PIN from SEALML_HSM_PIN.",
    ),
    hsm_token: str | None = typer.Option(None, "--hsm-token", help="The token's label."),
    blob_store: str | None = typer.Option(
        None,
        "--blob-store",
        help="s3://bucket or s3://bucket/prefix/: keep sealed blobs in an S3-compatible "
        "bucket (credentials from the AWS chain; default prefix sealml/<workspace id>/).",
    ),
    s3_endpoint: str | None = typer.Option(
        None, "--s3-endpoint", help="The S3 service's https URL when it is not AWS (MinIO...)."
    ),
    s3_region: str | None = typer.Option(None, "--s3-region", help="The bucket's region."),
    s3_ca_bundle: Path | None = typer.Option(
        None, "--s3-ca-bundle", help="A private CA's certificates for the S3 endpoint."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Create a workspace: config, database, blob store, keystore and the first admin.

    The keystore passphrase comes from SEALML_PASSPHRASE (or a prompt), the admin's password
    from SEALML_PASSWORD (or a prompt), an HSM token's PIN from SEALML_HSM_PIN (or a
    prompt).
    """
    if (hsm_module is None) != (hsm_token is None):
        raise UsageError("give --hsm-module and --hsm-token together")
    if blob_store is None and (s3_endpoint or s3_region or s3_ca_bundle):
        raise UsageError("--s3-endpoint, --s3-region and --s3-ca-bundle need --blob-store")
    bucket = (
        S3Location.from_url(
            blob_store,
            endpoint_url=s3_endpoint,
            region=s3_region,
            ca_bundle=str(s3_ca_bundle.resolve()) if s3_ca_bundle else None,
        )
        if blob_store
        else None
    )
    root = find_root(directory if directory is not None else state(ctx).workspace)
    passphrase = credentials.secret_from_env(credentials.PASSPHRASE_ENV, "Keystore passphrase")
    password = credentials.secret_from_env(credentials.PASSWORD_ENV, f"Password for {admin}")
    workspace = Workspace.init(
        root,
        passphrase=passphrase,
        admin_password=password,
        admin_name=admin,
        name=name,
        kdf=FAST_PARAMS if insecure_fast_kdf else DEFAULT_PARAMS,
        database_url=database_url,
        hsm=TokenSettings(str(hsm_module), hsm_token) if hsm_module and hsm_token else None,
        hsm_pin=credentials.secret_from_env(HSM_PIN_ENV, "HSM token PIN") if hsm_module else None,
        bucket=bucket,
    )
    workspace.close()
    result = {
        "workspace": str(root),
        "id": workspace.config.workspace.id,
        "admin": admin,
        "verifier_key": workspace.config.ledger.verifier_key,
    }
    if as_json:
        print_json(result)
        return
    out.print(styled(f"created workspace {root} (id {result['id']}) with admin ", (admin, "bold")))
    out.print(f"checkpoint verifier key (keep a copy elsewhere): {result['verifier_key']}")


def login(
    ctx: typer.Context,
    user: str | None = typer.Option(None, "--user", "-u", help="Principal (default SEALML_USER)."),
    keep_locked: bool = typer.Option(
        False, "--keep-locked", help="Do not keep the keystore unlocked for the session."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Check your password once and store a short-lived session ticket (0600).

    Unless --keep-locked, the keystore is unlocked too (SEALML_PASSPHRASE, the passphrase
    file, or a prompt) and its key kept in the ticket, so the session's commands skip the
    passphrase and its KDF."""
    with open_workspace(ctx, act=False) as workspace:
        name = user or os.environ.get(credentials.USER_ENV)
        if not name:
            if not credentials.interactive():
                raise UsageError(f"give --user or set {credentials.USER_ENV}")
            name = typer.prompt("User", err=True)
        password = os.environ.get(credentials.PASSWORD_ENV)
        secret = Secret(password) if password else None
        if secret is None:
            if not credentials.interactive():
                raise UsageError(f"set {credentials.PASSWORD_ENV} or run in a terminal")
            secret = credentials.prompt_secret(f"Password for {name}")
        workspace.login(name, secret)
        if not keep_locked and not workspace.unlocked and credentials.interactive():
            _ = workspace.keys
        ticket = workspace.start_session(keep_keystore=not keep_locked)
        credentials.save_ticket(workspace.config.workspace.id, ticket)
    if as_json:
        print_json({"user": ticket.principal, "expires_at": ticket.expires_at})
    else:
        minutes = workspace.config.access.session_ttl_minutes
        out.print(styled("logged in as ", (ticket.principal, "bold"), f" for {minutes} minutes"))


def logout(ctx: typer.Context) -> None:
    """End the current session and delete its ticket."""
    with open_workspace(ctx, act=False) as workspace:
        workspace_id = workspace.config.workspace.id
        ticket = credentials.load_ticket(workspace_id, os.environ.get(credentials.USER_ENV))
        if ticket is None:
            out.print("no session")
            return
        workspace.end_session(ticket)
        credentials.forget_ticket(workspace_id, ticket.principal)
    out.print(f"logged out {ticket.principal}")


def whoami(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Show the acting principal, its roles and how it authenticated."""
    with open_workspace(ctx) as workspace:
        actor = workspace.require_actor()
    info = {
        "name": actor.name,
        "kind": actor.principal.kind,
        "roles": list(actor.principal.roles),
        "via": actor.via,
        "key_fingerprint": actor.principal.public_key.fingerprint(),
    }
    if as_json:
        print_json(info)
    else:
        out.print(
            f"{info['name']} ({info['kind']}) roles: {', '.join(info['roles'])}; via {info['via']}"
        )


def optional_code(help_text: str) -> Any:
    """A ``--code`` option for a TOTP code that is needed only sometimes."""
    return typer.Option(None, "--code", envvar="SEALML_TOTP_CODE", help=help_text)


@app.command("add")
def add_user(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Principal name."),
    role: list[str] = typer.Option(..., "--role", help="Role (repeat for several)."),
    service: bool = typer.Option(False, "--service", help="A service principal (key file login)."),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="Where to write a service's private key (created 0600)."
    ),
    key_in_token: bool = typer.Option(
        False,
        "--key-in-token",
        help="Generate a service's key in the workspace's PKCS#11 token instead of a file "
        "(it logs in with SEALML_USER, SEALML_KEY_IN_TOKEN=1 and the token's PIN).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Add a principal. A human's password comes from SEALML_NEW_PASSWORD or a prompt."""
    service = service or role == ["service"] or key_in_token
    if key_in_token and key_file is not None:
        raise UsageError("give --key-file or --key-in-token, not both")
    if service and key_file is None and not key_in_token:
        raise UsageError("a service principal needs --key-file (or --key-in-token)")
    if service and key_file is not None and key_file.exists():
        raise UsageError(f"{key_file} exists; refusing to overwrite a key file")
    with open_workspace(ctx) as workspace:
        # Refuse (and audit) before asking for a password nobody may set.
        workspace.authorize("user:admin", f"principal:{name}", action="user.add")
        workspace.check_new_user(name, role)
        password = (
            None
            if service
            else credentials.secret_from_env(NEW_PASSWORD_ENV, f"Password for {name}")
        )
        principal, key = workspace.add_user(
            name, role, password=password, service=service, key_in_token=key_in_token
        )
    if key is not None and key_file is not None:
        create_private(key_file, key.pkcs8_pem())
    result = {
        "name": principal.name,
        "kind": principal.kind,
        "roles": list(principal.roles),
        "key_fingerprint": principal.public_key.fingerprint(),
        "key_file": str(key_file) if key_file else None,
        "key_in_token": key_in_token,
    }
    if as_json:
        print_json(result)
    else:
        roles = ", ".join(principal.roles)
        out.print(styled(f"added {principal.kind} ", (name, "bold"), f" with roles {roles}"))
        if key_file:
            out.print(f"private key written to {key_file} (0600); keep it secret")
        if key_in_token:
            out.print("private key generated in the PKCS#11 token; it never leaves it")


@app.command("ls")
def list_users(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """List principals."""
    with open_workspace(ctx) as workspace:
        principals = workspace.users()
        enrolled = workspace.totp_enrolled_ids()
    rows = [
        {
            "name": p.name,
            "kind": p.kind,
            "roles": list(p.roles),
            "disabled": p.disabled,
            "created_at": p.created_at,
            "created_by": p.created_by,
            "key_fingerprint": p.public_key.fingerprint(),
            "retired_keys": [k.fingerprint() for k in p.retired_keys],
            "totp": p.id in enrolled,
        }
        for p in principals
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("name", "kind", "roles", "status", "totp", "created", "key", box=None)
    for row in rows:
        table.add_row(
            str(row["name"]),
            str(row["kind"]),
            ", ".join(row["roles"]),  # type: ignore[arg-type]
            "disabled" if row["disabled"] else "active",
            "yes" if row["totp"] else "no",
            str(row["created_at"])[:19].replace("T", " "),
            str(row["key_fingerprint"])[:16],
        )
    print_table(table)


@app.command("disable")
def disable_user(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Disable a principal and end its sessions (its past signatures stay valid)."""
    with open_workspace(ctx) as workspace:
        workspace.set_user_disabled(name, True)
    out.print(f"disabled {name}")


@app.command("enable")
def enable_user(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Re-enable a disabled principal."""
    with open_workspace(ctx) as workspace:
        workspace.set_user_disabled(name, False)
    out.print(f"enabled {name}")


@app.command("totp-enroll")
def totp_enroll(
    ctx: typer.Context,
    code: str | None = optional_code("A current code from your existing secret (to replace it)."),
    as_json: bool = JsonOption,
) -> None:
    """Create your TOTP secret for approvals; it is shown once, add it to an authenticator."""
    with open_workspace(ctx) as workspace:
        enrolment = workspace.totp_enroll(code)
    if as_json:
        print_json({"secret": enrolment.secret, "uri": enrolment.uri})
        return
    out.print("add this secret to your authenticator app; it is not shown again:")
    out.print(f"  secret  {enrolment.secret}")
    out.print(f"  uri     {enrolment.uri}")


@app.command("passwd")
def change_password(
    ctx: typer.Context,
    code: str | None = optional_code("After a password reset: a code from your authenticator."),
) -> None:
    """Change your password; your sessions end, your signing key stays the same.

    The current password comes from SEALML_PASSWORD or a prompt, the new one from
    SEALML_NEW_PASSWORD or a prompt."""
    with open_workspace(ctx) as workspace:
        name = workspace.require_actor().name
        current = credentials.secret_from_env(
            credentials.PASSWORD_ENV, f"Current password for {name}", new=False
        )
        new = credentials.secret_from_env(NEW_PASSWORD_ENV, f"New password for {name}")
        workspace.change_password(current, new, code)
        credentials.forget_ticket(workspace.config.workspace.id, name)
    out.print(f"changed the password of {name}; log in again")


@app.command("reset-password")
def reset_password(ctx: typer.Context, name: str = typer.Argument(..., help="A person.")) -> None:
    """Give a person who forgot their password a new one (SEALML_NEW_PASSWORD or a prompt).

    Their old key was sealed under the forgotten password: they get a new signing key, the
    old one stays to verify what it signed. Their sessions end; tell them to change the
    password with `sealml user passwd`."""
    with open_workspace(ctx) as workspace:
        # Refuse (and audit) before asking for a password nobody may set.
        workspace.authorize("user:admin", f"principal:{name}", action="user.reset-password")
        password = credentials.secret_from_env(NEW_PASSWORD_ENV, f"New password for {name}")
        _, after = workspace.reset_password(name, password)
    out.print(
        styled(
            "reset the password of ",
            (name, "bold"),
            f"; new signing key {after.public_key.fingerprint()[:16]}; they should change it "
            "with `sealml user passwd`",
        )
    )


@app.command("rotate-key")
def rotate_key(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="A service principal (default: yourself)."),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="Where to write a service's new private key (created 0600)."
    ),
    compromised_since: str | None = typer.Option(
        None,
        "--compromised-since",
        help="The old key leaked at this time (ISO 8601, or 'now'): what the ledger shows "
        "it signed from then on no longer verifies.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Give a principal a new signing key; the old one stays only to verify what it signed.

    A person rotates their own key (password from SEALML_PASSWORD or a prompt); a user
    admin, or the service itself, rotates a service's key into --key-file. Sessions end."""
    if key_file is not None and key_file.exists():
        raise UsageError(f"{key_file} exists; refusing to overwrite a key file")
    if key_file is not None and not key_file.parent.is_dir():
        raise UsageError(f"{key_file.parent} is not a folder; the new key could not be written")
    with open_workspace(ctx) as workspace:
        actor = workspace.require_actor()
        target = name or actor.name
        kind = actor.principal.kind if target == actor.name else None
        if kind is None:  # another principal's key: only a service's, by a user admin
            workspace.authorize("user:admin", f"principal:{target}", action="user.rotate-key")
            kind = workspace.public_key(target).kind
            if kind == "human":
                raise UsageError(f"{target} is a person; they rotate their own key")
        person = kind == "human"
        in_token = not person and workspace.token_key_of(workspace.public_key(target)) is not None
        if not person and key_file is None and not in_token:
            raise UsageError("a service's new key needs --key-file")
        if in_token and key_file is not None:
            raise UsageError(f"{target}'s key is in the token, and so will its new one be")
        password = (
            credentials.secret_from_env(
                credentials.PASSWORD_ENV, f"Password for {target}", new=False
            )
            if person
            else None
        )
        since = utc_now() if compromised_since == "now" else compromised_since
        before, after, key = workspace.rotate_signing_key(target, password, since)
        credentials.forget_ticket(workspace.config.workspace.id, target)
    if key is not None and key_file is not None:
        create_private(key_file, key.pkcs8_pem())
    retired, current = before.public_key.fingerprint(), after.public_key.fingerprint()
    written = str(key_file) if key is not None and key_file else None
    if as_json:
        print_json(
            {
                "name": target,
                "retired": retired,
                "current": current,
                "key_file": written,
                "compromised_since": after.compromised[-1][1] if since else None,
            }
        )
        return
    out.print(styled("new signing key for ", (target, "bold"), f": {current[:16]}"))
    if since:
        out.print(
            f"retired {retired[:16]} as compromised: it verifies only what the ledger shows "
            f"it signed before {after.compromised[-1][1]}"
        )
    else:
        out.print(f"retired {retired[:16]} (it still verifies what it signed)")
    if written:
        out.print(f"private key written to {key_file} (0600); the old key file no longer logs in")


@app.command("roles")
def set_roles(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Principal name."),
    role: list[str] = typer.Option(..., "--role", help="Role (repeat for several)."),
    as_json: bool = JsonOption,
) -> None:
    """Replace a principal's roles (the full list); applies to their sessions at once."""
    with open_workspace(ctx) as workspace:
        before, after = workspace.set_user_roles(name, role)
    if as_json:
        print_json({"name": name, "before": list(before.roles), "after": list(after.roles)})
    else:
        now, were = ", ".join(after.roles), ", ".join(before.roles)
        out.print(styled("roles of ", (name, "bold"), f": {now} (were {were})"))


@app.command("totp-reset")
def totp_reset(ctx: typer.Context, name: str = typer.Argument(..., help="Principal name.")) -> None:
    """Forget another principal's TOTP secret (a lost device) so they can enrol again."""
    with open_workspace(ctx) as workspace:
        workspace.reset_totp(name)
    out.print(f"reset the TOTP secret of {name}; they enrol again with `sealml user totp-enroll`")
