"""``sealml backup`` and ``sealml restore``: encrypted copies of a whole workspace."""

from __future__ import annotations

from pathlib import Path

import typer

from ..config import CONFIG_NAME, load_config
from ..errors import UsageError
from ..workspace.core import find_root
from . import credentials
from .common import JsonOption, open_workspace, out, print_json, state, styled


def backup(
    ctx: typer.Context,
    output: Path = typer.Argument(..., help="The backup file to create (0600)."),
    as_json: bool = JsonOption,
) -> None:
    """Write an encrypted backup of the whole workspace to OUTPUT.

    Configuration, a consistent copy of the database, the keystore and every live
    artifact, encrypted and authenticated under a key derived from the workspace
    passphrase (needed again to restore). Needs workspace:backup (admins)."""
    from ..workspace.backup import create_backup

    root = find_root(state(ctx).workspace)
    config = load_config(root / CONFIG_NAME)
    passphrase = credentials.passphrase_source(root, config.keys.passphrase_file)()
    with open_workspace(ctx) as workspace:
        made = create_backup(workspace, output, passphrase)
    if as_json:
        print_json(
            {
                "path": str(made.path),
                "workspace_id": made.workspace_id,
                "created_at": made.created_at,
                "artifacts": made.artifacts,
                "ledger_size": made.ledger_size,
                "bytes": made.bytes,
            }
        )
        return
    out.print(
        f"backed up {made.artifacts} artifact(s) and {made.ledger_size} ledger event(s) to "
        f"{made.path} ({made.bytes:,} bytes, encrypted)"
    )


def restore(
    archive: Path = typer.Argument(..., help="A file made by `sealml backup`."),
    folder: Path | None = typer.Argument(
        None, help="Where to restore the workspace (a new folder; not with --check)."
    ),
    check: bool = typer.Option(
        False, "--check", help="Only authenticate and check the backup; restore nothing."
    ),
    accept_rollback: bool = typer.Option(
        False,
        "--accept-rollback",
        help="Restore even though this machine saw the ledger grow after the backup.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Restore a backup into a new FOLDER after authenticating and checking all of it.

    Needs the workspace passphrase of the time of the backup (SEALML_PASSPHRASE or a
    prompt). Nothing is put in place unless everything verified; with --check, nothing is
    put in place at all."""
    from ..workspace.backup import check_backup, restore_backup

    if (folder is None) != check:
        raise UsageError("give a FOLDER to restore into, or --check without one")
    passphrase = credentials.passphrase_source(folder or archive.parent, None)()
    if folder is None:
        restored = check_backup(archive, passphrase)
    else:
        restored = restore_backup(archive, folder, passphrase, accept_rollback=accept_rollback)
    if as_json:
        print_json(
            {
                "root": None if check else str(restored.root),
                "workspace_id": restored.workspace_id,
                "backup_created_at": restored.created_at,
                "artifacts": restored.artifacts,
                "ledger_size": restored.ledger_size,
                "rolled_back_events": restored.rolled_back_events,
            }
        )
        return
    what = f"{restored.artifacts} artifact(s), {restored.ledger_size} ledger event(s)"
    if check:
        out.print(f"the backup of {restored.created_at} verified: {what}")
    else:
        out.print(f"restored the workspace of {restored.created_at} into {restored.root}: {what}")
    if restored.rolled_back_events:
        done = "would roll back" if check else "rolled back"
        out.print(
            styled(
                (
                    f"restoring {done} {restored.rolled_back_events} later ledger events "
                    "this machine saw",
                    "yellow",
                )
            )
        )
    if not check:
        out.print("next: `sealml verify --all` and `sealml audit verify` in the restored workspace")
