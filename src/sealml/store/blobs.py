"""Blob backends: where sealed bytes live.

Blob names are random, so they reveal nothing about content. A backend writes a new blob
to a temporary place and publishes it under its final name only once it is complete and
durable; readers never see a partial blob.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ..diskio import DurableAppender, open_for_reading
from ..errors import IntegrityError, UsageError
from ..fsutil import FILE_MODE, fsync_dir, make_private_dir

NAME_BYTES = 16


class BlobWriter(Protocol):
    """A blob being written: ``commit`` publishes it; leaving the context without a commit
    discards it."""

    name: str

    def write(self, data: memoryview, /) -> object: ...

    def commit(self) -> None: ...

    def __enter__(self) -> BlobWriter: ...

    def __exit__(self, *exc: object) -> None: ...


class BlobStore(Protocol):
    """What every blob backend (local folder, S3-compatible bucket) offers."""

    def writer(self) -> BlobWriter: ...

    def open(self, name: str) -> io.RawIOBase: ...

    def size(self, name: str) -> int: ...

    def delete(self, name: str) -> None: ...

    def purge(self, name: str) -> None:
        """Delete every stored copy of the blob the store keeps (older versions too)."""
        ...

    def exists(self, name: str) -> bool: ...

    def listing(self) -> Iterator[tuple[str, int]]:
        """Every stored blob's name and size."""
        ...

    def stale_partials(self, older_than_seconds: float) -> int: ...

    def discard_partial(self, older_than_seconds: float) -> int: ...


def check_name(name: str) -> None:
    """Refuse anything but a blob name this module makes (no paths, no traversal)."""
    if len(name) != 2 * NAME_BYTES or not all(c in "0123456789abcdef" for c in name):
        raise UsageError("malformed blob name")


class _LocalWriter:
    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self.name = secrets.token_hex(NAME_BYTES)
        store.tmp.mkdir(exist_ok=True, mode=0o700)
        self._tmp = store.tmp / f"{self.name}.part"
        self._file = DurableAppender(self._tmp, FILE_MODE)
        self._committed = False

    def write(self, data: memoryview, /) -> int:
        return self._file.write(data)

    def commit(self) -> None:
        self._file.finish()
        self._file.close()
        final = self._store.path_of(self.name)
        final.parent.mkdir(exist_ok=True, mode=0o700)
        self._tmp.replace(final)
        fsync_dir(final.parent)
        self._committed = True

    def __enter__(self) -> _LocalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._committed:
            self._file.close()
            self._tmp.unlink(missing_ok=True)


class LocalBlobStore:
    """Blobs as files under a private folder, fanned out by the first two name characters."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def __repr__(self) -> str:
        return f"LocalBlobStore({self.root})"

    def __str__(self) -> str:
        return str(self.root)

    @classmethod
    def initialise(cls, root: Path) -> LocalBlobStore:
        make_private_dir(root)
        make_private_dir(root / "tmp")
        return cls(root)

    def path_of(self, name: str) -> Path:
        check_name(name)
        return self.root / name[:2] / name

    def writer(self) -> _LocalWriter:
        return _LocalWriter(self)

    def open(self, name: str) -> io.RawIOBase:
        try:
            return open_for_reading(self.path_of(name))
        except FileNotFoundError:
            raise IntegrityError(f"blob {name} is missing from the store") from None

    def size(self, name: str) -> int:
        try:
            return self.path_of(name).stat().st_size
        except FileNotFoundError:
            raise IntegrityError(f"blob {name} is missing from the store") from None

    def delete(self, name: str) -> None:
        self.path_of(name).unlink(missing_ok=True)

    def purge(self, name: str) -> None:
        self.delete(name)  # a folder keeps no versions

    def exists(self, name: str) -> bool:
        return self.path_of(name).is_file()

    def listing(self) -> Iterator[tuple[str, int]]:
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and len(folder.name) == 2:
                for blob in sorted(folder.iterdir()):
                    with contextlib.suppress(FileNotFoundError):
                        yield blob.name, blob.stat().st_size

    def _partials(self, older_than_seconds: float) -> Iterator[Path]:
        cutoff = time.time() - older_than_seconds
        if self.tmp.is_dir():
            for part in self.tmp.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if part.stat().st_mtime < cutoff:
                        yield part

    def stale_partials(self, older_than_seconds: float) -> int:
        """How many interrupted writes are older than the given age."""
        return sum(1 for _ in self._partials(older_than_seconds))

    def discard_partial(self, older_than_seconds: float) -> int:
        """Remove temporary files of interrupted writes older than the given age."""
        parts = list(self._partials(older_than_seconds))
        for part in parts:
            part.unlink(missing_ok=True)
        return len(parts)
