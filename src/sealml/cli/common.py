"""Shared CLI plumbing: the global options, opening the workspace, printing results."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..config import CONFIG_NAME, load_config
from ..errors import UsageError
from ..fsutil import create_private, write_private
from ..workspace import Workspace
from ..workspace.core import find_root
from . import credentials

# Terminal control characters: C0 but newline and tab, DEL and C1.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """*text* with every terminal control character shown as U+FFFD, one for one. Names and
    details printed come from files anyone may have written (an archive member, a global
    a pickle names), and an escape sequence in one could rewrite what the terminal shows."""
    return _CONTROL.sub("\ufffd", text)


def _printable_renderable(item: Any) -> Any:
    if isinstance(item, str):
        return printable(item)
    if isinstance(item, Text):
        safe = item.copy()
        safe.plain = printable(safe.plain)  # same length, so every style stays in place
        return safe
    if isinstance(item, Table):
        for column in item.columns:  # rich keeps a column's cells in this list
            column._cells = [_printable_renderable(cell) for cell in column._cells]
    return item


class _Terminal(Console):
    """A console that never passes control characters through (see :func:`printable`)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(_printable_renderable(item) for item in objects), **kwargs)


# No markup: names, paths and messages come from users and files, and a bracket in one
# ("[/x]") would be read as a tag (and fail). Styling is asked for with styled().
out = _Terminal(highlight=False, soft_wrap=True, markup=False)
err = _Terminal(stderr=True, highlight=False, soft_wrap=True, markup=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line of plain strings and (text, style) pairs, none of it read as markup."""
    return Text.assemble(*parts)


JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


@dataclass
class State:
    """Options given before the sub-command."""

    workspace: Path | None = None


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, State) else State()


@contextlib.contextmanager
def open_workspace(ctx: typer.Context, *, act: bool = True) -> Iterator[Workspace]:
    """Open the workspace named by the options or environment, authenticated unless
    *act* is False."""
    root = find_root(state(ctx).workspace)
    config = load_config(root / CONFIG_NAME)
    passphrase = credentials.passphrase_source(root, config.keys.passphrase_file)
    workspace = Workspace.open(root, passphrase=passphrase)
    given = credentials.passphrase_given(config.keys.passphrase_file)

    def unlock() -> None:
        # Unlock before anything is written, so every event is anchored by a checkpoint.
        if given and not workspace.unlocked:
            _ = workspace.keys

    try:
        if act:
            # A session ticket may unlock the keystore itself (without the KDF).
            credentials.authenticate(workspace, before_login=unlock)
        unlock()
        if workspace.policy_pending:
            err.print(
                "warning: sealml.toml proposes roles, registry rules, serving or monitoring "
                "settings that are not in force; "
                "an admin can run `sealml policy approve`"
            )
        yield workspace
    finally:
        workspace.close()


def print_table(table: Table) -> None:
    """Print a table; when piped, wide enough that no cell is cut."""
    if out.is_terminal:
        out.print(table)
    else:
        _Terminal(highlight=False, width=250, markup=False).print(table)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_or_print(text: str, output: Path | None, *, replace: bool = True) -> None:
    """Print *text*, or write it to *output* (0600): replacing the file, or, unless
    *replace*, refusing one that exists."""
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    elif replace:
        write_private(output, text.encode("utf-8"))
    elif output.exists():
        raise UsageError(f"{output} already exists; refusing to overwrite it")
    else:
        create_private(output, text.encode("utf-8"))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
