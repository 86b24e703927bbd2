"""Where the CLI finds secrets: environment, files, session tickets, or a prompt.

Order for the keystore passphrase: ``SEALML_PASSPHRASE``, then ``keys.passphrase_file`` in
``sealml.toml``, then a prompt when a terminal is attached.

Order for the acting principal: ``SEALML_KEY_FILE`` (with ``SEALML_USER``), then
``SEALML_KEY_IN_TOKEN=1`` (with ``SEALML_USER``: a service whose key is in the workspace's
PKCS#11 token), then ``SEALML_USER`` with ``SEALML_PASSWORD``, then the session ticket
that ``sealml login`` stored (for ``SEALML_USER`` or the current session), then a prompt.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import typer

from ..access.sessions import SessionTicket
from ..config import resolve
from ..crypto.canonical import parse_json
from ..crypto.secret import Secret
from ..crypto.signing import KeyFormatError, SigningKey
from ..errors import AuthenticationError, UsageError
from ..fsutil import make_private_dir, read_private_file, write_private
from ..witness import state_home
from ..workspace import Workspace

PASSPHRASE_ENV = "SEALML_PASSPHRASE"  # noqa: S105 (a variable name)
USER_ENV = "SEALML_USER"
PASSWORD_ENV = "SEALML_PASSWORD"  # noqa: S105 (a variable name)
KEY_FILE_ENV = "SEALML_KEY_FILE"
KEY_IN_TOKEN_ENV = "SEALML_KEY_IN_TOKEN"  # noqa: S105 (1: the key is in the token)


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def prompt_secret(label: str, confirm: bool = False) -> Secret:
    value = typer.prompt(label, hide_input=True, confirmation_prompt=confirm, err=True)
    return Secret(value)


def secret_from_env(env: str, label: str, *, new: bool = True) -> Secret:
    """A secret (passphrase, password) from *env*, else a prompt: confirmed when it is a
    *new* one, asked once when it confirms a current one."""
    value = os.environ.get(env)
    if value:
        return Secret(value)
    if interactive():
        return prompt_secret(label, confirm=new)
    raise UsageError(f"set {env} or run in a terminal to be prompted for the {label.lower()}")


def passphrase_given(passphrase_file: str | None) -> bool:
    """True when the passphrase can be had without prompting."""
    return bool(os.environ.get(PASSPHRASE_ENV) or passphrase_file)


def passphrase_source(root: Path, passphrase_file: str | None) -> Callable[[], Secret]:
    """A lazy passphrase lookup for Workspace.open."""

    def lookup() -> Secret:
        value = os.environ.get(PASSPHRASE_ENV)
        if value:
            return Secret(value)
        if passphrase_file:
            data = read_private_file(resolve(root, passphrase_file), "passphrase file")
            return Secret(data.rstrip(b"\r\n"))
        if interactive():
            return prompt_secret("Keystore passphrase")
        raise AuthenticationError(
            f"the keystore passphrase is needed: set {PASSPHRASE_ENV} or keys.passphrase_file"
        )

    return lookup


# -- session tickets --------------------------------------------------------------------


def _sessions_dir(workspace_id: str) -> Path:
    return state_home() / "sessions" / workspace_id


def save_ticket(workspace_id: str, ticket: SessionTicket) -> Path:
    folder = _sessions_dir(workspace_id)
    make_private_dir(folder)
    path = folder / f"{ticket.principal}.json"
    write_private(
        path,
        json.dumps(
            {
                "principal": ticket.principal,
                "token": base64.b64encode(ticket.token).decode(),
                "key_box": base64.b64encode(ticket.key_box).decode(),
                "expires_at": ticket.expires_at,
                "keystore_box": (
                    base64.b64encode(ticket.keystore_box).decode() if ticket.keystore_box else None
                ),
            }
        ).encode(),
    )
    write_private(folder / "current", ticket.principal.encode())
    return path


def load_ticket(workspace_id: str, user: str | None) -> SessionTicket | None:
    folder = _sessions_dir(workspace_id)
    if user is None:
        try:
            user = (folder / "current").read_text().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
    path = folder / f"{user}.json"
    if not path.exists():
        return None
    try:
        data = parse_json(read_private_file(path, "session file"))
        ticket = SessionTicket(
            principal=str(data["principal"]),
            token=base64.b64decode(data["token"]),
            key_box=base64.b64decode(data["key_box"]),
            expires_at=int(data["expires_at"]),
            keystore_box=(
                base64.b64decode(data["keystore_box"]) if data.get("keystore_box") else None
            ),
        )
    except (ValueError, KeyError, TypeError):
        raise AuthenticationError(f"session file {path} is damaged; run `sealml login`") from None
    if ticket.expires_at <= time.time():
        forget_ticket(workspace_id, ticket.principal)
        raise AuthenticationError("your session expired; run `sealml login`")
    return ticket


def forget_ticket(workspace_id: str, user: str) -> None:
    folder = _sessions_dir(workspace_id)
    (folder / f"{user}.json").unlink(missing_ok=True)
    current = folder / "current"
    if current.exists() and current.read_text().strip() == user:
        current.unlink()


# -- acting principal -------------------------------------------------------------------


def load_key_file(path: Path) -> SigningKey:
    try:
        return SigningKey.from_pkcs8(read_private_file(path, "key file"))
    except KeyFormatError:
        raise UsageError(f"{path} is not an unencrypted PKCS#8 private key") from None


def authenticate(
    workspace: Workspace,
    user: str | None = None,
    before_login: Callable[[], None] | None = None,
) -> None:
    """Make *workspace* act as the principal the environment names (see module doc).
    *before_login* runs before a login that writes to the ledger (not before resuming a
    session, which writes nothing)."""
    prepare = before_login or (lambda: None)
    user = user or os.environ.get(USER_ENV) or None
    key_file = os.environ.get(KEY_FILE_ENV)
    if key_file:
        if not user:
            raise UsageError(f"{KEY_FILE_ENV} needs {USER_ENV} to name the principal")
        prepare()
        workspace.login_with_key(user, load_key_file(Path(key_file)))
        return
    if os.environ.get(KEY_IN_TOKEN_ENV) == "1":
        if not user:
            raise UsageError(f"{KEY_IN_TOKEN_ENV} needs {USER_ENV} to name the principal")
        prepare()
        workspace.login_with_token_key(user)
        return
    password = os.environ.get(PASSWORD_ENV)
    if user and password:
        prepare()
        workspace.login(user, Secret(password))
        return
    ticket = load_ticket(workspace.config.workspace.id, user)
    if ticket is not None:
        workspace.resume_session(ticket)
        return
    if interactive():
        name = user or typer.prompt("User", err=True)
        prepare()
        workspace.login(name, prompt_secret(f"Password for {name}"))
        return
    raise AuthenticationError(
        f"no principal: run `sealml login`, or set {USER_ENV} with {PASSWORD_ENV} or {KEY_FILE_ENV}"
    )
