"""What a stage prints, warns and logs while it runs, kept for the run's records.

The text is bounded (a stage that prints without end cannot fill memory), the values of the
secrets the stage was given are blanked out, and the runner seals it as the stage's log.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator

MAX_LOG_CHARS = 1 << 20
_DRAIN_SECONDS = 5.0
_FORMAT = "%(levelname)s %(name)s: %(message)s"


class BoundedText(io.TextIOBase):
    """A text sink that keeps the first *limit* characters and counts the rest."""

    def __init__(self, limit: int = MAX_LOG_CHARS) -> None:
        self.limit = limit
        self._parts: list[str] = []
        self._kept = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = max(self.limit - self._kept, 0)
        kept = text[:room]
        if kept:
            self._parts.append(kept)
            self._kept += len(kept)
        self.dropped += len(text) - len(kept)
        return len(text)

    def text(self, secrets: Iterable[str] = ()) -> str:
        """What was written, secrets blanked, with a note when some was dropped."""
        found = "".join(self._parts)
        for secret in secrets:
            if len(secret) >= 4:  # shorter values would blank ordinary text
                found = found.replace(secret, "***")
        if self.dropped:
            found += f"\n[sealml: {self.dropped} more characters were not kept]\n"
        return found


def _flush_c_stdio() -> None:
    """Flush the C library's stdio buffers (native code's ``printf``) into their files."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


def _drain(read_end: int, into: BoundedText) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        while chunk := os.read(read_end, 1 << 16):
            into.write(decoder.decode(chunk))
        into.write(decoder.decode(b"", final=True))
    finally:
        os.close(read_end)


@contextlib.contextmanager
def descriptors_captured(sink: BoundedText) -> Iterator[None]:
    """Also capture what reaches file descriptors 1 and 2 directly (native libraries,
    child processes) while the block runs, and add it to *sink* at the end.

    The redirection is process-wide: use it only in a process that runs nothing else at
    the time (the sandbox's worker, a Ray task), never beside a progress display.
    """
    for stream in (sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    _flush_c_stdio()
    native = BoundedText(sink.limit)
    read_end, write_end = os.pipe()
    reader = threading.Thread(target=_drain, args=(read_end, native), daemon=True)
    reader.start()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        yield
    finally:
        _flush_c_stdio()
        for fd, original in zip((1, 2), saved, strict=True):
            os.dup2(original, fd)
            os.close(original)
        # A child process the stage left running may hold the pipe open: do not wait on it.
        reader.join(timeout=_DRAIN_SECONDS)
        text = native.text()
        if text:
            sink.write(text if text.endswith("\n") else text + "\n")


@contextlib.contextmanager
def captured(limit: int = MAX_LOG_CHARS, descriptors: bool = False) -> Iterator[BoundedText]:
    """Capture ``print`` (stdout and stderr), warnings and ``logging`` records of INFO and
    above while the block runs; with *descriptors*, what reaches file descriptors 1 and 2
    directly too (see :func:`descriptors_captured`)."""
    sink = BoundedText(limit)
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        with (
            descriptors_captured(sink) if descriptors else contextlib.nullcontext(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
            warnings.catch_warnings(record=True) as caught,  # the filters in force still apply
        ):
            try:
                yield sink
            finally:
                for warning in caught:
                    sink.write(
                        warnings.formatwarning(
                            warning.message, warning.category, warning.filename, warning.lineno
                        )
                    )
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
