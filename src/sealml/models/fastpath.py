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

from .opcodes import TABLE, Cursor, uint1

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


_KINDS = {
    code: (_kind(opcode.name), opcode.name == "GLOBAL", read)
    for code, (opcode, read) in TABLE.items()
}


def imports(data: Any, start: int, max_opcodes: int) -> tuple[int, list[Import]] | None:
    """``(end, imports)`` for the pickle at *start*, or None when the full stack machine
    must decide."""
    cursor = Cursor(data, start)
    end, kinds = cursor.end, _KINDS
    found: list[Import] = []
    memo: dict[int, Any] = {}
    below = top = _UNKNOWN  # the two topmost stack values, when known exactly
    count = 0
    try:
        while True:
            position = cursor.pos
            if position >= end or count > max_opcodes:
                return None
            count += 1
            entry = kinds.get(data[position])
            if entry is None:
                return None
            kind, pushes_global, read = entry
            if read is uint1:  # the commonest argument (memo indices), read inline
                if position + 1 >= end:
                    return None
                arg: Any = data[position + 1]
                cursor.pos = position + 2
            else:
                cursor.pos = position + 1
                arg = read(cursor) if read is not None else None
            if kind == 1:  # a string literal
                below, top = top, arg if isinstance(arg, str) else _UNKNOWN
            elif kind == 2:
                memo[len(memo)] = top
            elif kind == 3:
                memo[int(arg)] = top
            elif kind == 4:
                below, top = top, memo.get(int(arg), _UNKNOWN)
            elif kind == 5:
                if not (isinstance(below, str) and isinstance(top, str)):
                    return None
                if (below, top) in _NEEDS_MACHINE:
                    return None
                found.append(Import(below, top, position))
                below = top = _UNKNOWN
            elif kind == 6:
                module, _, name = str(arg).partition(" ")
                if (module, name) in _NEEDS_MACHINE:
                    return None
                found.append(Import(module, name, position))
                below, top = (top, _UNKNOWN) if pushes_global else (_UNKNOWN, _UNKNOWN)
            elif kind == 7:
                found.append(Import(None, str(arg), position))
                below = top = _UNKNOWN
            elif kind == 8:
                return cursor.pos, found
            elif kind != 9:
                below = top = _UNKNOWN
    except Exception:  # malformed: the full machine reports it precisely
        return None
