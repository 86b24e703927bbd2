"""Reading a pickle's opcodes without building objects or copying large arguments.

``pickletools.genops`` reads every argument into memory, so a pickle holding a gigabyte of
tensor bytes costs a gigabyte of copying before anyone looks at it. A scanner only needs the
small arguments (names, numbers, memo indices); byte strings and very long text are skipped
by seeking past them, which also lets a memory-mapped file be scanned in place.
"""

from __future__ import annotations

import pickletools
import struct
from collections.abc import Iterator
from typing import IO, Any

# Text arguments longer than this are never names of anything; they are skipped unread.
MAX_TEXT = 1 << 16


# What the walker reads from: ``io.BytesIO``, or an ``mmap.mmap`` (same read/readline/seek/tell).
Stream = IO[bytes]


class Skipped:
    """Stands for an argument that was seeked past rather than read."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"<{self.size} bytes skipped>"


# Counted arguments: the struct format of their length prefix, and whether they are text
# (read when short) or bytes (always skipped).
_COUNTED: dict[str, tuple[str, bool]] = {
    "string1": ("<B", False),
    "string4": ("<i", False),
    "bytes1": ("<B", False),
    "bytes4": ("<I", False),
    "bytes8": ("<Q", False),
    "bytearray8": ("<Q", False),
    "unicodestring1": ("<B", True),
    "unicodestring4": ("<I", True),
    "unicodestring8": ("<Q", True),
}
_BY_CODE: dict[int, pickletools.OpcodeInfo] = {ord(op.code): op for op in pickletools.opcodes}


class TruncatedPickleError(ValueError):
    """The stream ends, or claims an argument longer than what is left."""


def walk(stream: Stream, end: int) -> Iterator[tuple[pickletools.OpcodeInfo, Any, int]]:
    """Yield ``(opcode, argument, position)`` until ``STOP`` (inclusive).

    *end* is the length of the underlying data, used to refuse arguments that claim to run
    past it. Unknown opcodes and truncation raise ``ValueError``.
    """
    read, tell = stream.read, stream.tell
    while True:
        position = tell()
        code = read(1)
        if not code:
            raise TruncatedPickleError("pickle ends without STOP")
        opcode = _BY_CODE.get(code[0])
        if opcode is None:
            raise ValueError(f"unknown opcode {code!r} at byte {position}")
        descriptor = opcode.arg
        if descriptor is None:
            argument: Any = None
        elif descriptor.name in _COUNTED:
            argument = _counted(stream, descriptor.name, end)
        else:
            argument = descriptor.reader(stream)
        yield opcode, argument, position
        if opcode.name == "STOP":
            return


def _counted(stream: Stream, kind: str, end: int) -> Any:
    layout, is_text = _COUNTED[kind]
    prefix = stream.read(struct.calcsize(layout))
    if len(prefix) != struct.calcsize(layout):
        raise TruncatedPickleError("argument length cut off")
    (size,) = struct.unpack(layout, prefix)
    if size < 0 or size > end - stream.tell():
        raise TruncatedPickleError(f"argument of {size} bytes runs past the end of the data")
    if is_text and size <= MAX_TEXT:
        return stream.read(size).decode("utf-8", "surrogatepass")
    stream.seek(size, 1)
    return Skipped(size)
