"""Large sequential file I/O without paying for the page cache.

On this class of machine, writing through the page cache costs about a second of kernel CPU
per GiB and the final fsync another half second; O_DIRECT writes go to the device by DMA at
disk speed with almost no CPU. Data is staged in a page-aligned buffer and written in
aligned blocks with O_DIRECT; the unaligned tail is written without it at the end, then the
file is fsynced. Where O_DIRECT is not supported (tmpfs, some network file systems) the
file is written normally, with write-back started early so the final fsync is short.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import mmap
import os
import queue
import threading
from pathlib import Path
from typing import Any

_ALIGN = 4096
_STAGE = 4 << 20
_WRITEBACK_STEP = 64 << 20
_READ_AHEAD = 3
# Below this size a file is read through the page cache: for it, direct I/O and the
# read-ahead thread cost more than they save, and a file read again is served from memory.
DIRECT_READ_FROM = 16 << 20


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


class DurableAppender:
    """An append-only file that is on stable storage once :meth:`finish` returns."""

    def __init__(self, path: Path, mode: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        direct = getattr(os, "O_DIRECT", 0)
        self._direct = False
        if direct:
            try:
                self._fd = os.open(path, flags | direct, mode)
                self._direct = True
            except OSError as error:
                if error.errno != errno.EINVAL:  # EINVAL: no direct I/O on this file system
                    raise
        if not self._direct:
            self._fd = os.open(path, flags, mode)
        self._stage = mmap.mmap(-1, _STAGE) if self._direct else None
        self._filled = 0
        self._written = 0
        self._advised = 0

    def write(self, data: memoryview, /) -> int:
        size = len(data)
        if self._stage is None:
            self._write_buffered(data)
            return size
        view = memoryview(self._stage)
        while data:
            take = min(len(data), _STAGE - self._filled)
            view[self._filled : self._filled + take] = data[:take]
            self._filled += take
            data = data[take:]
            if self._filled == _STAGE:
                self._flush_stage(_STAGE)
        return size

    def _flush_stage(self, length: int) -> None:
        assert self._stage is not None
        try:
            _write_all(self._fd, memoryview(self._stage)[:length])
        except OSError:
            # The file system refused direct I/O after all: continue through the cache.
            self._disable_direct()
            _write_all(self._fd, memoryview(self._stage)[:length])
        self._written += length
        remaining = self._filled - length
        if remaining:
            self._stage.move(0, length, remaining)
        self._filled = remaining

    def _disable_direct(self) -> None:
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~getattr(os, "O_DIRECT", 0))
        self._direct = False

    def _write_buffered(self, data: memoryview) -> None:
        _write_all(self._fd, data)
        self._written += len(data)
        if self._written - self._advised >= _WRITEBACK_STEP:
            # Start write-back of this stretch now so the fsync at the end has little left.
            with contextlib.suppress(OSError):
                os.posix_fadvise(
                    self._fd, self._advised, self._written - self._advised, os.POSIX_FADV_DONTNEED
                )
            self._advised = self._written

    def finish(self) -> None:
        """Write what is staged and fsync; the file is durable afterwards."""
        if self._stage is not None and self._filled:
            aligned = self._filled // _ALIGN * _ALIGN
            if aligned and self._direct:
                self._flush_stage(aligned)
            if self._direct:
                self._disable_direct()
            _write_all(self._fd, memoryview(self._stage)[: self._filled])
            self._written += self._filled
            self._filled = 0
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._stage is not None:
            self._stage.close()
            self._stage = None


class DirectReader(io.RawIOBase):
    """Reads a large file sequentially with O_DIRECT, a helper thread reading ahead.

    Reading through the page cache costs close to a second of kernel CPU per GiB here and
    evicts everything else; direct reads cost almost none, and reading ahead on a helper
    thread keeps the disk busy while the caller decrypts. Falls back to ordinary reads
    where O_DIRECT is not supported.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        direct = getattr(os, "O_DIRECT", 0)
        try:
            self._fd = os.open(path, os.O_RDONLY | direct)
        except OSError as error:
            if not direct or error.errno != errno.EINVAL:
                raise
            self._fd = os.open(path, os.O_RDONLY)
        self._free: queue.SimpleQueue[mmap.mmap | None] = queue.SimpleQueue()
        self._ready: queue.SimpleQueue[tuple[mmap.mmap | None, int, BaseException | None]] = (
            queue.SimpleQueue()
        )
        self._buffers = [mmap.mmap(-1, _STAGE) for _ in range(_READ_AHEAD)]
        for buffer in self._buffers:
            self._free.put(buffer)
        self._stop = threading.Event()
        self._current: mmap.mmap | None = None
        self._view = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(target=self._read_ahead, name="sealml-read", daemon=True)
        self._thread.start()

    def _read_ahead(self) -> None:
        while not self._stop.is_set():
            buffer = self._free.get()
            if buffer is None or self._stop.is_set():
                return
            try:
                count = self._read_block(buffer)
            except BaseException as error:  # handed to the reading thread
                self._ready.put((None, 0, error))
                return
            if count == 0:
                self._ready.put((None, 0, None))
                return
            self._ready.put((buffer, count, None))

    def _read_block(self, buffer: mmap.mmap) -> int:
        try:
            return os.readv(self._fd, [buffer])
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~getattr(os, "O_DIRECT", 0))
            return os.readv(self._fd, [buffer])

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        destination = memoryview(target).cast("B")
        while not self._view:
            if self._eof:
                return 0
            if self._current is not None:
                self._free.put(self._current)
                self._current = None
            buffer, count, error = self._ready.get()
            if error is not None:
                raise error
            if buffer is None:
                self._eof = True
                return 0
            self._current = buffer
            self._view = memoryview(buffer)[:count]
        count = min(len(destination), len(self._view))
        destination[:count] = self._view[:count]
        self._view = self._view[count:]
        return count

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._free.put(None)
            self._thread.join()
            self._view.release()
            os.close(self._fd)
            for buffer in self._buffers:
                buffer.close()
        super().close()


def open_for_reading(path: Path) -> io.RawIOBase:
    """A sequential reader of *path*: a :class:`DirectReader` for a large file, the plain
    file for a small one."""
    handle = open(path, "rb", buffering=0)  # noqa: SIM115 (returned to the caller)
    try:
        if os.fstat(handle.fileno()).st_size < DIRECT_READ_FROM:
            return handle
    except BaseException:
        handle.close()
        raise
    handle.close()
    return DirectReader(path)
