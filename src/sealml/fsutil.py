"""Private, atomic file writes: files 0600, folders 0700, write-to-temp then rename."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import UsageError

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(path: Path) -> None:
    """Create *path* (and parents) if needed and make it 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    path.chmod(DIR_MODE)


def fsync_dir(path: Path) -> None:
    """Persist a rename or creation inside *path*."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, *, durable: bool = True) -> Iterator[BinaryIO]:
    """Yield a 0600 temporary file next to *path*; rename it over *path* on success.

    On any exception the temporary file is removed and *path* is untouched, so readers see
    either the old content or the new content, never a partial file.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb", buffering=0) as handle:
            yield handle
            if durable:
                os.fsync(handle.fileno())
        tmp.replace(path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replacement_stamp(path: Path) -> tuple[int, int, int]:
    """What changes whenever *path* is replaced (sealml writes its files by atomic rename):
    compare two stamps to learn cheaply whether another process wrote it since."""
    status = path.stat()
    return status.st_ino, status.st_mtime_ns, status.st_size


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace *path* with *data*, mode 0600."""
    with atomic_writer(path) as handle:
        handle.write(data)


def create_private(path: Path, data: bytes) -> None:
    """Create *path* with *data*, mode 0600; fails if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_private_file(path: Path, what: str) -> bytes:
    """Read a secret file, refusing one that others can read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"{what} {path} is readable by others; run chmod 600 on it")
    return data
