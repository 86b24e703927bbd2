"""Progress bars for long transfers (shown only on a terminal, for inputs over 64 MiB)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .common import err

THRESHOLD = 64 << 20


class CountingReader(io.RawIOBase):
    """Reports every byte read from *inner* to *advance*."""

    def __init__(self, inner: BinaryIO, advance: Callable[[int], None]) -> None:
        super().__init__()
        self._inner = inner
        self._advance = advance

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count: int = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self._advance(count)
        return count


@contextlib.contextmanager
def transfer(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n)`` callback that drives a progress bar when worthwhile."""
    if total < THRESHOLD or not err.is_terminal:
        yield lambda _count: None
        return
    columns = (
        TextColumn("{task.description}", markup=False),  # file names, not markup
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda count: progress.advance(task, count)
