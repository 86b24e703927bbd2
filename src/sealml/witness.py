"""The local witness: the largest checkpoint this user has seen, kept outside the workspace.

Every time this user's sealml signs or reads a newer checkpoint it records it under the
user's state folder. ``audit verify`` then requires the ledger to extend it, so replacing
the workspace database with an older copy (a rollback) is detected even though every old
checkpoint in that copy is validly signed. Keep an off-machine copy too (``audit
checkpoint -o``): an attacker who controls this user's home folder can roll back both.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import IntegrityError, UsageError
from .fsutil import FILE_MODE, make_private_dir, write_private
from .ledger.checkpoint import Checkpoint

STATE_ENV = "SEALML_STATE_DIR"


def state_home() -> Path:
    """``$SEALML_STATE_DIR``, else ``$XDG_STATE_HOME/sealml``, else ``~/.local/state/sealml``."""
    explicit = os.environ.get(STATE_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "sealml"


class Witness:
    """Reads and advances the witnessed checkpoint of one workspace; *opener* checks a
    note's signature (by the key in force at its size: see :class:`KeyHistory`)."""

    def __init__(self, workspace_id: str, opener: Callable[[str], Checkpoint]) -> None:
        self.path = state_home() / "witness" / f"{workspace_id}.note"
        self._open = opener

    def load(self) -> Checkpoint | None:
        """The witnessed checkpoint; None when there is none or it does not verify."""
        try:
            return self.load_checked()
        except IntegrityError:
            return None

    def load_checked(self) -> Checkpoint | None:
        """The witnessed checkpoint, None when there is none; IntegrityError when one is
        kept but does not verify with this workspace's keys (the verifier key in the
        configuration, or the ledger's key history, was replaced: a swapped workspace)."""
        try:
            note = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            raise IntegrityError(f"the witness file {self.path} is not a checkpoint") from None
        try:
            return self._open(note)
        except (UsageError, IntegrityError) as error:
            raise IntegrityError(
                f"the witnessed checkpoint does not verify with this workspace's keys "
                f"({error}): sealml.toml's verifier key or the ledger was replaced, perhaps "
                f"with an older copy; if you restored one on purpose, move {self.path} aside"
            ) from None

    def advance(self, note: str) -> None:
        """Remember *note* if it is newer than what was witnessed (under a lock, so two
        processes advancing at once never put back the older of their notes). A witnessed
        note that does not verify is kept, never replaced (IntegrityError): it is the
        evidence ``audit verify`` reports."""
        checkpoint = self._open(note)
        with contextlib.suppress(OSError), self._locked():
            current = self.load_checked()
            if current is not None and current.size >= checkpoint.size:
                return
            write_private(self.path, note.encode("utf-8"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        make_private_dir(self.path.parent)
        lock = self.path.with_suffix(".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
