"""``sealml keys show | rotate | migrate | rotate-workspace-key | shred | export | passphrase``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..config import resolve
from ..errors import UsageError
from ..fsutil import write_private
from ..keys.pkcs11 import TokenSettings
from ..workspace.core import HSM_PIN_ENV
from . import credentials
from .common import JsonOption, err, open_workspace, out, print_json, write_or_print
from .credentials import interactive

app = typer.Typer(help="Key-encryption keys and data keys.", no_args_is_help=True)
NEW_PASSPHRASE_ENV = "SEALML_NEW_PASSPHRASE"  # noqa: S105 (a variable name)


@app.command()
def show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Where the workspace's keys are: KEK provider, the workspace key, its age."""
    with open_workspace(ctx) as workspace:
        summary = workspace.key_summary()
    if as_json:
        print_json(summary)
        return
    provider = "PKCS#11 token" if summary["provider"] == "pkcs11" else "keystore"
    place = "the PKCS#11 token" if summary["workspace_key_in_token"] else "the keystore"
    out.print(f"key-encryption keys: {provider}, current {summary['kek']}")
    out.print(
        f"workspace key: in {place}, in use since {summary['since']}, "
        f"{summary['rotations']} rotation(s)"
    )
    out.print(f"verifier key: {summary['verifier']}")
    if summary["services_in_token"]:
        out.print(f"services signing in the token: {', '.join(summary['services_in_token'])}")
    if summary["superseded_workspace_keys"]:
        out.print(
            f"superseded workspace key copies left by an interrupted rotation: "
            f"{summary['superseded_workspace_keys']} (the next rotation destroys them)"
        )


@app.command()
def rotate(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Create a new KEK, re-wrap every data key under it and destroy the old KEKs."""
    with open_workspace(ctx) as workspace:
        result = workspace.rotate_keys()
    if as_json:
        print_json(result)
    else:
        out.print(
            f"current KEK {result['kek']}; re-wrapped {result['rewrapped']} data key(s); "
            f"destroyed {', '.join(result['destroyed']) or 'none'}"
        )


@app.command()
def migrate(
    ctx: typer.Context,
    hsm_module: Path = typer.Option(
        ..., "--hsm-module", help="The PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so)."
    ),
    hsm_token: str = typer.Option(..., "--hsm-token", help="The token's label."),
    as_json: bool = JsonOption,
) -> None:
    """Move the key-encryption keys from the keystore into a PKCS#11 token (an HSM).

    A KEK is generated in the token, sealml.toml points at it, every data key is re-wrapped
    there and the keystore's KEKs are destroyed. The PIN comes from SEALML_HSM_PIN (or a
    prompt). Run it again if it was interrupted."""
    settings = TokenSettings(str(hsm_module), hsm_token)
    pin = credentials.secret_from_env(HSM_PIN_ENV, "HSM token PIN", new=False)
    with open_workspace(ctx) as workspace:
        result = workspace.migrate_keys_to_token(settings, pin)
    if as_json:
        print_json(result)
        return
    out.print(
        f"KEKs now in token {result['token']} (current {result['kek']}); re-wrapped "
        f"{result['rewrapped']} data key(s); destroyed {', '.join(result['destroyed'])} in "
        "the keystore, which keeps the workspace signing key and named secrets"
    )
    err.print(
        f"set {HSM_PIN_ENV} (or keys.hsm_pin_file) wherever the workspace is opened, and "
        "restart servers and dashboards that had it open"
    )


@app.command("rotate-workspace-key")
def rotate_workspace_key(
    ctx: typer.Context,
    in_token: bool = typer.Option(
        False, "--in-token", help="Generate the new key in the PKCS#11 token the KEKs are in."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Replace the workspace key (checkpoints, principal records, policy, API keys).

    Everything it attests is checked and signed again, the ledger records the handover in
    a checkpoint both keys sign, sealml.toml takes the new verifier key and the old key is
    destroyed. Give the new verifier key to whoever checks proofs offline."""
    with open_workspace(ctx) as workspace:
        result = workspace.rotate_workspace_key(in_token=in_token)
    if as_json:
        print_json(result)
        return
    where = "the PKCS#11 token" if result["in_token"] else "the keystore"
    out.print(
        f"new workspace key in {where}; attested again {result['principals']} principal(s), "
        f"the policy and {result['api_keys']} API key(s)"
    )
    out.print(f"checkpoint verifier key (keep a copy elsewhere): {result['verifier']}")


@app.command()
def shred(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Artifact id, id prefix or name."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in the ledger)."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    as_json: bool = JsonOption,
) -> None:
    """Destroy one artifact's data key: its content becomes unrecoverable; its record stays."""
    with open_workspace(ctx) as workspace:
        info = workspace.info(ref)
        if not yes:
            if not interactive():
                raise UsageError("shredding cannot be undone; add --yes to confirm")
            typer.confirm(
                f"Shred {info.kind} {info.name} ({info.id})? This cannot be undone",
                abort=True,
                err=True,
            )
        info = workspace.shred(info.id, reason)
    if as_json:
        print_json(info.to_dict())
    else:
        out.print(f"shredded {info.kind} {info.name} ({info.id}) at {info.shredded_at}")


@app.command()
def export(
    ctx: typer.Context,
    user: str | None = typer.Option(None, "--user", help="Whose key (default: yours)."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="A new file for it (default: standard output)."
    ),
    fingerprint: str | None = typer.Option(
        None,
        "--fingerprint",
        help="The key whose fingerprint starts so, also a retired one (default: current).",
    ),
) -> None:
    """Export a principal's public signing key (PEM) to verify its signatures elsewhere.

    For model signatures (`model_signing verify key`) and provenance envelopes checked
    outside sealml; --fingerprint picks a key retired by a rotation, for what it signed."""
    with open_workspace(ctx) as workspace:
        principal = workspace.public_key(user)
    key = principal.public_key
    if fingerprint is not None:
        wanted = fingerprint.strip().lower()
        found = [k for k in principal.keys if wanted and k.fingerprint().startswith(wanted)]
        if len(found) != 1:
            known = ", ".join(k.fingerprint()[:16] for k in principal.keys)
            problem = "matches no key" if not found else "matches several keys"
            raise UsageError(f"--fingerprint {problem} of {principal.name} (keys: {known})")
        key = found[0]
    write_or_print(key.pem(), output, replace=False)
    if output is not None:
        state = "current" if key == principal.public_key else "retired"
        out.print(
            f"wrote {principal.name}'s {state} public key to {output} "
            f"(fingerprint {key.fingerprint()})"
        )


@app.command()
def passphrase(
    ctx: typer.Context,
    update_file: bool = typer.Option(
        False,
        "--update-passphrase-file",
        help="Also write the new passphrase to keys.passphrase_file (atomically, 0600).",
    ),
) -> None:
    """Change the keystore passphrase; the keys stay the same (after a leak, rotate too).

    The current passphrase comes from SEALML_PASSPHRASE, keys.passphrase_file or a prompt,
    the new one from SEALML_NEW_PASSPHRASE or a prompt."""
    with open_workspace(ctx) as workspace:
        passphrase_file = workspace.config.keys.passphrase_file
        if update_file and not passphrase_file:
            raise UsageError("--update-passphrase-file needs keys.passphrase_file in sealml.toml")
        current = credentials.passphrase_source(workspace.root, passphrase_file)()
        new = credentials.secret_from_env(NEW_PASSPHRASE_ENV, "New keystore passphrase")
        workspace.change_passphrase(current, new)
        if update_file and passphrase_file:
            write_private(resolve(workspace.root, passphrase_file), new.reveal() + b"\n")
    out.print("changed the keystore passphrase; backups made before keep the old one")
    if passphrase_file and not update_file:
        err.print(
            f"warning: keys.passphrase_file ({passphrase_file}) still holds the old passphrase; "
            "write the new one there"
        )
