"""A quick, exact pass over ordinary pickles: every global they import, or "ask the full
stack machine".

Most opcodes of a model pickle build data and never matter to what it imports. This pass
tracks only what can be known for certain without modelling the stack: the values of the
top two stack items while the opcodes since the last unknown change were string pushes,
memo stores and fetches, and framing. A ``STACK_GLOBAL`` whose two operands are known that
way is resolved; anything else it cannot vouch for (operands produced by other opcodes,
joblib's raw arrays, a malformed stream) makes it return None, and the caller runs the full
stack machine on the stream instead. It therefore never resolves a name differently from
the full machine: it either agrees or declines.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .opcodes import TABLE, Cursor, Reader, uint1

_UNKNOWN: Any = object()
# Globals whose meaning depends on data that follows them (joblib writes raw array bytes
# after its wrapper): only the full machine knows how to step over those bytes.
_NEEDS_MACHINE = {("joblib.numpy_pickle", "NumpyArrayWrapper")}
_TEXT = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}
_STORE = {"PUT", "BINPUT", "LONG_BINPUT"}
_FETCH = {"GET", "BINGET", "LONG_BINGET"}
_STACK_NEUTRAL = {"FRAME", "PROTO"}


class Import(NamedTuple):
    """A global the stream imports (or, with *module* None, an extension code)."""

    module: str | None
    name: str
    position: int


def _kind(name: str) -> int:
    if name in _TEXT:
        return 1
    if name == "MEMOIZE":
        return 2
    if name in _STORE:
        return 3
    if name in _FETCH:
        return 4
    if name == "STACK_GLOBAL":
        return 5
    if name in ("GLOBAL", "INST"):
        return 6
    if name.startswith("EXT"):
        return 7
    if name == "STOP":
        return 8
    if name in _STACK_NEUTRAL:
        return 9
    return 0


# What the loop does with each opcode. The commonest opcodes of model pickles are applied
# inline with no call: data opcodes whose argument (none, fixed width, or one length byte
# and that many bytes) is stepped over unread, MEMOIZE, BINGET and short strings. Anything
# else has its argument read (inline for one byte, else by its reader) and its kind applied.
_DATA, _DATA_SHORT, _MEMOIZE, _BINGET, _SHORT_TEXT, _ONE_BYTE, _READ = range(7)
_FIXED_WIDTHS = {None: 0, "uint1": 1, "uint2": 2, "int4": 4, "uint4": 4, "float8": 8}


def _action(name: str, kind: int, read: Reader | None, argument: str | None) -> tuple[int, int]:
    """(action, width of a data opcode's argument)."""
    if kind == 0 and argument in _FIXED_WIDTHS:
        return _DATA, _FIXED_WIDTHS[argument]
    if kind == 0 and argument in ("bytes1", "string1", "long1"):
        return _DATA_SHORT, 0
    if name == "MEMOIZE":
        return _MEMOIZE, 0
    if name == "BINGET":
        return _BINGET, 0
    if name == "SHORT_BINUNICODE":
        return _SHORT_TEXT, 0
    return (_ONE_BYTE if read is uint1 else _READ), 0


# Indexed by opcode byte (a list index is cheaper than a dict lookup, once per opcode):
# (action, width, kind, pushes a GLOBAL, reader); None for bytes that are not opcodes.
_TABLE: list[tuple[int, int, int, bool, Reader | None] | None] = [None] * 256
for _code, (_opcode, _read) in TABLE.items():
    _kind_of = _kind(_opcode.name)
    _argument = _opcode.arg.name if _opcode.arg else None
    _TABLE[_code] = (
        *_action(_opcode.name, _kind_of, _read, _argument),
        _kind_of,
        _opcode.name == "GLOBAL",
        _read,
    )


def imports(data: Any, start: int, max_opcodes: int) -> tuple[int, list[Import]] | None:
    """``(end, imports)`` for the pickle at *start*, or None when the full stack machine
    must decide."""
    cursor = Cursor(data, start)
    end, table = cursor.end, _TABLE
    found: list[Import] = []
    memo: dict[int, Any] = {}
    below = top = _UNKNOWN  # the two topmost stack values, when known exactly
    position, count = start, 0
    try:
        while True:
            # Running past the end (an argument stepped over that is longer than the data)
            # lands here too, and declines.
            if position >= end or count > max_opcodes:
                return None
            count += 1
            entry = table[data[position]]
            if entry is None:
                return None
            action, width, kind, pushes_global, read = entry
            if action == _DATA:
                position += 1 + width
                below = top = _UNKNOWN
                continue
            if action == _MEMOIZE:
                memo[len(memo)] = top
                position += 1
                continue
            if action == _BINGET:
                below, top = top, memo.get(data[position + 1], _UNKNOWN)
                position += 2
                continue
            if action == _DATA_SHORT:
                position += 2 + data[position + 1]
                below = top = _UNKNOWN
                continue
            if action == _SHORT_TEXT:
                stop = position + 2 + data[position + 1]
                if stop > end:
                    return None
                below, top = top, data[position + 2 : stop].decode("utf-8", "surrogatepass")
                position = stop
                continue
            at = position
            if action == _ONE_BYTE:
                arg: Any = data[position + 1]
                position += 2
            else:
                cursor.pos = position + 1
                arg = read(cursor) if read is not None else None
                position = cursor.pos
            if kind == 1:  # a string literal
                below, top = top, arg if isinstance(arg, str) else _UNKNOWN
            elif kind == 3:
                memo[int(arg)] = top
            elif kind == 4:
                below, top = top, memo.get(int(arg), _UNKNOWN)
            elif kind == 5:
                if not (isinstance(below, str) and isinstance(top, str)):
                    return None
                if (below, top) in _NEEDS_MACHINE:
                    return None
                found.append(Import(below, top, at))
                below = top = _UNKNOWN
            elif kind == 6:
                module, _, name = str(arg).partition(" ")
                if (module, name) in _NEEDS_MACHINE:
                    return None
                found.append(Import(module, name, at))
                below, top = (top, _UNKNOWN) if pushes_global else (_UNKNOWN, _UNKNOWN)
            elif kind == 7:
                found.append(Import(None, str(arg), at))
                below = top = _UNKNOWN
            elif kind == 8:
                return position, found
            elif kind == 0:
                below = top = _UNKNOWN
            # kind 9 (FRAME, PROTO) leaves the stack alone
    except Exception:  # malformed: the full machine reports it precisely
        return None
