"""Reading a pickle's opcodes without building objects or copying large arguments.

``pickletools.genops`` reads every argument into memory, so a pickle holding a gigabyte of
tensor bytes costs a gigabyte of copying before anyone looks at it. A scanner only needs the
small arguments (names, numbers, memo indices); byte strings and very long text are skipped
by moving past them, which also lets a memory-mapped file be scanned in place. The walker
indexes the buffer directly (no file object in between), which is several times faster than
reading it through ``read`` calls.
"""

from __future__ import annotations

import io
import pickletools
import struct
import warnings
from collections.abc import Callable
from typing import Any

# Text arguments longer than this are never names of anything; they are skipped unread.
MAX_TEXT = 1 << 16


class Skipped:
    """Stands for an argument that was seeked past rather than read."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"<{self.size} bytes skipped>"


class TruncatedPickleError(ValueError):
    """The stream ends, or claims an argument longer than what is left."""


class Cursor:
    """A position in a buffer (``bytes`` or a memory-mapped file); the walker reads by index,
    never through a file object, and callers may move ``pos`` to skip data."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: Any, start: int = 0) -> None:
        self.data, self.pos, self.end = data, start, len(data)


def _fixed(layout: str) -> Callable[[Cursor], Any]:
    unpack, size = struct.Struct(layout).unpack_from, struct.calcsize(layout)

    def read(cursor: Cursor) -> Any:
        if cursor.pos + size > cursor.end:
            raise TruncatedPickleError("argument cut off")
        (value,) = unpack(cursor.data, cursor.pos)
        cursor.pos += size
        return value

    return read


def uint1(cursor: Cursor) -> int:
    if cursor.pos >= cursor.end:
        raise TruncatedPickleError("argument cut off")
    cursor.pos += 1
    return int(cursor.data[cursor.pos - 1])


def _counted(layout: str, is_text: bool) -> Callable[[Cursor], Any]:
    if layout == "<B":
        return _short_counted(is_text)
    length = _fixed(layout)

    def read(cursor: Cursor) -> Any:
        size = length(cursor)
        if size < 0 or size > cursor.end - cursor.pos:
            raise TruncatedPickleError(f"argument of {size} bytes runs past the end of the data")
        start = cursor.pos
        cursor.pos += size
        if is_text and size <= MAX_TEXT:
            return cursor.data[start : cursor.pos].decode("utf-8", "surrogatepass")
        return Skipped(size)

    return read


def _short_counted(is_text: bool) -> Callable[[Cursor], Any]:
    """A one-byte length and that many bytes: the commonest argument of model pickles (names
    and small byte strings), read without a nested call."""

    def read(cursor: Cursor) -> Any:
        position = cursor.pos
        if position >= cursor.end:
            raise TruncatedPickleError("argument cut off")
        start = position + 1
        stop = start + cursor.data[position]
        if stop > cursor.end:
            raise TruncatedPickleError(
                f"argument of {stop - start} bytes runs past the end of the data"
            )
        cursor.pos = stop
        if is_text:
            return cursor.data[start:stop].decode("utf-8", "surrogatepass")
        return Skipped(stop - start)

    return read


def _long(layout: str) -> Callable[[Cursor], int]:
    length = uint1 if layout == "<B" else _fixed(layout)

    def read(cursor: Cursor) -> int:
        size = length(cursor)
        if size < 0 or size > cursor.end - cursor.pos:
            raise TruncatedPickleError("long integer runs past the end of the data")
        start = cursor.pos
        cursor.pos += size
        return int.from_bytes(cursor.data[start : cursor.pos], "little", signed=True)

    return read


def _lines(reader: Callable[[Any], Any], count: int) -> Callable[[Cursor], Any]:
    """Newline-terminated arguments (protocol 0): handed to pickletools' own reader."""

    def read(cursor: Cursor) -> Any:
        end = cursor.pos
        for _ in range(count):
            newline = cursor.data.find(b"\n", end, cursor.end)
            if newline == -1:
                raise TruncatedPickleError("text argument without a newline")
            end = newline + 1
        line = io.BytesIO(bytes(cursor.data[cursor.pos : end]))
        cursor.pos = end
        with warnings.catch_warnings():
            # a quoted string with a stray backslash warns as it is decoded: data, not news
            warnings.simplefilter("ignore", DeprecationWarning)
            return reader(line)

    return read


_SIMPLE: dict[str, Callable[[Cursor], Any]] = {
    "uint1": uint1,
    "uint2": _fixed("<H"),
    "int4": _fixed("<i"),
    "uint4": _fixed("<I"),
    "uint8": _fixed("<Q"),
    "float8": _fixed(">d"),
    "long1": _long("<B"),
    "long4": _long("<i"),
    "string1": _counted("<B", False),
    "string4": _counted("<i", False),
    "bytes1": _counted("<B", False),
    "bytes4": _counted("<I", False),
    "bytes8": _counted("<Q", False),
    "bytearray8": _counted("<Q", False),
    "unicodestring1": _counted("<B", True),
    "unicodestring4": _counted("<I", True),
    "unicodestring8": _counted("<Q", True),
}


def _reader(descriptor: pickletools.ArgumentDescriptor | None) -> Callable[[Cursor], Any] | None:
    if descriptor is None:
        return None
    if descriptor.name in _SIMPLE:
        return _SIMPLE[descriptor.name]
    return _lines(descriptor.reader, 2 if descriptor.name.endswith("_pair") else 1)


Reader = Callable[[Cursor], Any]
# Every opcode by its byte: its description and how to read its argument (None: no argument).
TABLE: dict[int, tuple[pickletools.OpcodeInfo, Reader | None]] = {
    ord(op.code): (op, _reader(op.arg)) for op in pickletools.opcodes
}
STOP = ord(".")
