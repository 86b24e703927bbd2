"""A static scanner for model files: it never unpickles or executes anything.

It walks pickle opcode streams (a quick exact pass first, see ``fastpath``, and when that
declines) with a small stack machine that resolves every global the stream would import:
``GLOBAL``/``INST`` names, ``STACK_GLOBAL`` names built from strings on the stack or
fetched back from the memo, and extension-registry codes; each is judged against the
allowlist. It opens zip and tar archives (PyTorch checkpoints, legacy ones too, ``.npz``,
nested archives), legacy PyTorch files (several pickles in a row), joblib files (pickles
with raw array data between opcodes), streams compressed with zlib, gzip, bz2, xz, LZMA or
Zstandard (see ``inflate``) and NumPy ``.npy`` files (whose object arrays are pickles). Malformed or
truncated streams, archive bombs, absurd sizes and deep nesting are findings, never
crashes; a file of no format it knows is walked as a pickle all the same.
"""

from __future__ import annotations

import ast
import io
import json
import mmap
import os
import pickle
import pickletools
import re
import struct
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

from ..errors import SealmlError
from . import fastpath
from .allowlist import judge
from .inflate import Compression, DamagedError, UnsupportedError, compression_of, inflate
from .onnxmodels import onnx_problems
from .opcodes import STOP, TABLE, Cursor, Reader, TruncatedPickleError
from .skopsaudit import is_skops_schema, severity, untrusted_types

# Scanned data is either bytes in memory (archive members, inflated data) or a file mapped
# read-only, which is walked in place without being copied.
Buffer = bytes | mmap.mmap
Stream = IO[bytes]  # what zipfile reads: io.BytesIO, or a mapped file

MAX_DEPTH = 4
MAX_ENTRIES = 10_000
MAX_RATIO = 200
MAX_BYTES = 64 << 30
MAX_OPCODES = 50_000_000
# Files up to this size are read into memory (indexing bytes is cheaper than indexing a
# mapping); larger ones are mapped and walked in place.
_READ_WHOLE = 1 << 20
MAX_STACK = 1_000_000
_PICKLE_SUFFIXES = (
    ".pkl",
    ".pickle",
    ".pt",
    ".pth",
    ".bin",
    ".joblib",
    ".ckpt",
    ".sav",
    ".p",
    ".dat",
)
SEVERITY_ORDER = {"critical": 3, "high": 2, "medium": 1, "low": 0}
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
_UNKNOWN: Any = object()
_MARK: Any = object()
_NESTED_PICKLE: object = object()


@dataclass(frozen=True)
class Finding:
    """One reason not to trust a file."""

    location: str
    severity: str
    kind: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return dict(vars(self))


@dataclass
class ScanResult:
    """The verdict on a file or folder and every finding behind it."""

    path: str
    files: int = 0  # files on disk (or the one in-memory file)
    members: int = 0  # entries read from inside archives
    bytes: int = 0
    # files and members of no model format that are no pickle either (unpickling one fails
    # before it imports anything): nothing in them runs when they are loaded
    unrecognised: int = 0
    findings: list[Finding] = field(default_factory=list)
    globals: set[str] = field(default_factory=set)

    @property
    def verdict(self) -> str:
        """``unsafe`` (a critical finding), ``unknown`` (anything else), or ``safe``."""
        if any(f.severity == "critical" for f in self.findings):
            return "unsafe"
        return "unknown" if self.findings else "safe"

    @property
    def worst(self) -> Finding | None:
        """The most severe finding (the first of equals), or None for a clean scan."""
        if not self.findings:
            return None
        return max(self.findings, key=lambda f: SEVERITY_RANK[f.severity])

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "verdict": self.verdict,
            "files": self.files,
            "members": self.members,
            "bytes": self.bytes,
            "unrecognised": self.unrecognised,
            "globals": sorted(self.globals),
            "findings": [f.to_dict() for f in self.findings],
        }


class _Scan:
    def __init__(self, result: ScanResult, probing: bool = False) -> None:
        self.result = result
        # Probing walks data of no known format as if it were a pickle, to learn what
        # unpickling it would import before it fails: see ``probe``.
        self.probing = probing

    def find(self, location: str, severity: str, kind: str, detail: str) -> None:
        self.result.findings.append(Finding(location, severity, kind, detail))

    # -- pickles --------------------------------------------------------------------------

    def pickle_stream(self, data: Buffer, location: str, start: int = 0, depth: int = 0) -> int:
        """Walk one pickle starting at *start*; returns the offset after its STOP (or the end
        of the data if it is malformed)."""
        if depth > MAX_DEPTH:
            self.find(location, "high", "nesting", f"pickles nested deeper than {MAX_DEPTH}")
            return len(data)
        quick = fastpath.imports(data, start, MAX_OPCODES)
        if quick is not None:
            end, found = quick
            for item in found:
                where = f"{location}@{item.position}"
                if item.module is None:
                    self.extension_code(where, item.name)
                else:
                    self.judge_global(item.module, item.name, where)
            return end
        machine = _Machine(self, location)
        stack, memo = machine.stack, machine.memo
        cursor = Cursor(data, start)
        dispatch, end, count = _DISPATCH, cursor.end, 0
        try:
            # One loop, no generator: this runs once per opcode and dominates a scan. The two
            # commonest opcodes of model pickles (MEMOIZE, BINGET) are applied inline.
            while True:
                position = cursor.pos
                if position >= end:
                    raise TruncatedPickleError("pickle ends without STOP")
                code = data[position]
                count += 1
                # the stack grows by at most one per opcode: checking now and then is enough
                if not count & 1023 and (count > MAX_OPCODES or len(stack) > MAX_STACK):
                    self.find(location, "high", "limit", "pickle too large to analyse; refused")
                    return len(data)
                if code == _MEMOIZE:
                    memo[len(memo)] = stack[-1] if stack else _UNKNOWN
                    cursor.pos = position + 1
                    continue
                if code == _BINGET:
                    if position + 1 >= end:
                        raise TruncatedPickleError("argument cut off")
                    stack.append(memo.get(data[position + 1], _UNKNOWN))
                    cursor.pos = position + 2
                    continue
                entry = dispatch[code]
                if entry is None:
                    raise ValueError(f"unknown opcode {code:#04x} at byte {position}")
                name, read, handler = entry
                cursor.pos = position + 1
                arg = read(cursor) if read is not None else None
                raw = handler(machine, name, arg, position)
                if raw is _NESTED_PICKLE:
                    # joblib writes an object array as a whole pickle of its own, with its
                    # own memo, in the middle of the outer stream.
                    where = f"{location}@{position}:objects"
                    cursor.pos = self.pickle_stream(data, where, cursor.pos, depth + 1)
                elif raw is not None:
                    _skip_raw_array(cursor, raw)
                if code == STOP:
                    return cursor.pos
        except Exception as error:
            self.find(
                location, "high", "malformed", f"pickle stream is malformed: {str(error)[:120]}"
            )
            return len(data)

    def extension_code(self, where: str, code: object) -> None:
        if self.probing:
            return  # Python's extension registry is empty unless a program fills it
        self.find(
            where, "high", "extension_code",
            f"imports callable #{code} from the copyreg extension registry",
        )  # fmt: skip

    def judge_global(self, module: str, name: str, where: str) -> None:
        if self.probing and not (_dotted(module) and _dotted(name)):
            # Text read as GLOBAL or INST: unpickling stops here, importing nothing. (The
            # two lines arrive joined by a space, so a space in either shows in *name*.)
            return
        self.result.globals.add(f"{module}.{name}")
        severity = judge(module, name)
        if severity is not None:
            kind = "dangerous_global" if severity == "critical" else "unknown_global"
            self.find(where, severity, kind, f"imports {module}.{name}")

    def pickles(self, data: Buffer, location: str, offset: int = 0) -> None:
        """One or more pickles in a row (legacy PyTorch files hold several)."""
        index = 0
        while offset < len(data) and index < 16:
            if data[offset] != 0x80 and index > 0:
                return  # raw storage bytes follow the pickles
            where = f"{location}#pickle{index}" if index else location
            offset = self.pickle_stream(data, where, offset)
            index += 1

    # -- containers -----------------------------------------------------------------------

    def blob(self, data: Buffer, location: str, depth: int) -> None:
        self.result.bytes += len(data)
        if depth > MAX_DEPTH:
            self.find(location, "high", "nesting", f"archives nested deeper than {MAX_DEPTH}")
            return
        head = bytes(data[:8])
        if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
            self.archive(data, location, depth)
        elif data[257:262] == b"ustar":
            self.tar(data, location, depth)
        elif head.startswith(b"\x93NUMPY"):
            self.npy(data, location)
        elif location.lower().endswith(".onnx"):
            self.onnx(data, location)
        elif (compression := compression_of(head)) is not None:
            self.compressed(data, location, depth, compression)
        elif head[:1] == b"\x80" or location.lower().endswith(_PICKLE_SUFFIXES):
            self.pickles(data, location)
        else:
            self.probe(data, location)

    def probe(self, data: Buffer, location: str) -> None:
        """Data of no model format: a protocol 0 pickle may start with almost any opcode and
        carry any name, so walk it as one. What unpickling would import before the stream
        turns out malformed is reported as for any pickle; data that imports nothing is
        counted as unrecognised (loading it as a pickle fails before anything runs)."""
        trial = _Scan(ScanResult(location), probing=True)
        trial.pickles(data, location)
        found = [f for f in trial.result.findings if f.kind != "malformed"]
        self.result.findings.extend(found)
        self.result.globals |= trial.result.globals
        if not found and len(found) < len(trial.result.findings):
            self.result.unrecognised += 1

    def compressed(self, data: Buffer, location: str, depth: int, kind: Compression) -> None:
        """Compressed joblib files (zlib, gzip, bz2, xz, LZMA): inflate within bounds, then
        scan what they hold."""
        try:
            inflated = inflate(kind, data, MAX_RATIO * max(len(data), 1 << 20))
        except DamagedError:
            # Not compressed after all: no loader inflates it, but unpickling might read it.
            self.probe(data, location)
            return
        except UnsupportedError as error:
            self.find(location, "medium", "unchecked", str(error))
            return
        if inflated.over_limit:
            self.find(location, "high", "bomb", "compressed data expands beyond the ratio limit")
            return
        if not inflated.ended:
            self.find(location, "high", "malformed", f"the {kind} stream is cut short")
        self.blob(inflated.data, f"{location}!{kind}", depth + 1)

    def archive(self, data: Buffer, location: str, depth: int) -> None:
        try:
            archive = zipfile.ZipFile(_stream(data))
            entries = archive.infolist()
        except Exception as error:  # zipfile raises many kinds (NotImplementedError too)
            self.find(location, "high", "malformed", f"damaged zip archive: {error}")
            return
        if len(entries) > MAX_ENTRIES:
            self.find(location, "high", "bomb", f"{len(entries)} archive entries")
            return
        total = 0
        for entry in entries:
            where = f"{location}!{entry.filename}"
            if entry.filename.endswith("/"):  # (is_dir() fails on an empty name)
                continue
            if entry.file_size > MAX_BYTES or (
                entry.compress_size and entry.file_size / entry.compress_size > MAX_RATIO
            ):
                self.find(where, "high", "bomb", "entry expands beyond the size or ratio limit")
                continue
            total += entry.file_size
            if total > MAX_BYTES:
                self.find(location, "high", "bomb", "archive expands beyond the size limit")
                return
            try:
                content = archive.read(entry)
            except Exception as error:
                self.find(where, "high", "malformed", f"unreadable entry: {str(error)[:100]}")
                continue
            if entry.filename == "schema.json" and is_skops_schema(content):
                self.result.members += 1
                self.skops(data, location)
            else:
                self.member(content, entry.filename, where, depth)

    def tar(self, data: Buffer, location: str, depth: int) -> None:
        """A tar archive (PyTorch's legacy format among others): every file in it."""
        total = count = 0
        try:
            with tarfile.open(fileobj=_stream(data), mode="r:") as archive:
                for entry in archive:  # headers are read one at a time: the count is bounded
                    count += 1
                    if count > MAX_ENTRIES:
                        self.find(location, "high", "bomb", f"over {MAX_ENTRIES} archive entries")
                        return
                    if not entry.isfile():
                        continue  # folders, links (a hard link's target is scanned itself)
                    total += entry.size
                    if total > MAX_BYTES:
                        self.find(location, "high", "bomb", "archive expands beyond the size limit")
                        return
                    handle = archive.extractfile(entry)
                    content = handle.read() if handle is not None else b""
                    self.member(content, entry.name, f"{location}!{entry.name}", depth)
        except (tarfile.TarError, OSError, EOFError) as error:
            self.find(location, "high", "malformed", f"damaged tar archive: {str(error)[:100]}")

    def member(self, content: bytes, name: str, where: str, depth: int) -> None:
        """One file read from an archive."""
        self.result.members += 1
        if name.lower().endswith(("data.pkl", ".pkl", ".pickle")) or content[:1] == b"\x80":
            self.result.bytes += len(content)
            self.pickles(content, where)
        else:
            self.blob(content, where, depth + 1)

    def skops(self, data: Buffer, location: str) -> None:
        """A skops file: every type and function its schema names, judged like globals."""
        try:
            names = untrusted_types(bytes(data))
        except SealmlError as error:
            self.find(location, "high", "malformed", str(error))
            return
        for dotted in names:
            self.result.globals.add(dotted)
            judged = severity(dotted)
            if judged is not None:
                kind = "dangerous_global" if judged == "critical" else "unknown_global"
                self.find(f"{location}!schema.json", judged, kind, f"names {dotted}")

    def onnx(self, data: Buffer, location: str) -> None:
        """An ONNX model: external data and custom operators reach outside the file."""
        for level, kind, detail in onnx_problems(bytes(data)):
            self.find(location, level, kind, detail)

    def npy(self, data: Buffer, location: str) -> None:
        """A ``.npy`` array: safe unless its dtype holds Python objects (then a pickle)."""
        try:
            major = data[6]
            if major == 1:
                (length,) = struct.unpack("<H", data[8:10])
                start = 10
            else:
                (length,) = struct.unpack("<I", data[8:12])
                start = 12
            header = bytes(data[start : start + length]).decode("latin1")
        except (IndexError, struct.error):
            self.find(location, "high", "malformed", "truncated NumPy header")
            return
        if _holds_objects(header):
            self.find(
                location, "medium", "object_array", "NumPy array of Python objects (a pickle)"
            )
            self.pickles(data, f"{location}:objects", start + length)


def _holds_objects(header: str) -> bool:
    """Whether a ``.npy`` header's dtype has Python objects anywhere, structured fields
    included. An unparseable header counts as holding objects: numpy would refuse it anyway,
    and the bytes after it are then treated as a pickle."""
    try:
        fields = ast.literal_eval(header.strip())
        descr = fields["descr"]
    except (ValueError, SyntaxError, TypeError, KeyError, MemoryError, RecursionError):
        return True

    def has_object(item: object) -> bool:
        if isinstance(item, str):
            return item.lstrip("<>|=") == "O"
        if isinstance(item, (list, tuple)):
            return any(has_object(part) for part in item)
        return False

    return has_object(descr)


class _Global(NamedTuple):
    """A global the stream imported (named tuples: created once per opcode, they must be
    cheap)."""

    module: str
    name: str


class _Call(NamedTuple):
    """The result of calling *function* with *args* (never actually called)."""

    function: Any
    args: Any


_LITERALS = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
}  # fmt: skip
_JOBLIB_WRAPPER = _Global("joblib.numpy_pickle", "NumpyArrayWrapper")
_DTYPE_CODE = re.compile(r"[<>|=]?[a-zA-Z]\d*(\[[a-zA-Z0-9]+\])?")


_FIXED_WIDTH = {"b": 1, "i": 0, "u": 0, "f": 0, "c": 0, "S": 0, "a": 0, "V": 0, "U": 0}


def _itemsize(code: str) -> int | None:
    """Bytes per element of a NumPy dtype string (``<f8``, ``|b1``, ``<U7``, ``<M8[ns]``);
    0 for object arrays, None when unknown. Parsed here rather than by NumPy so a scan
    never needs to import it."""
    body = code.lstrip("<>|=").split("[", 1)[0]
    kind, digits = body[:1], body[1:]
    if kind == "O":
        return 0 if digits in ("", "8") else None
    if kind in ("M", "m"):
        return 8 if digits in ("", "8") else None
    if kind not in _FIXED_WIDTH or not digits.isdigit():
        return None
    size = int(digits)
    return size * 4 if kind == "U" else size


class _Machine:
    """Just enough of the unpickler's stack to know every global a stream imports, and the
    shape of joblib's raw arrays, without creating any object.

    Each opcode is applied by its handler in ``_HANDLERS`` (or one that only keeps the
    stack depth right); a handler returns (aligned, bytes) when raw joblib array
    data follows, or ``_NESTED_PICKLE`` when a joblib object array (a pickle of its own) does.
    """

    def __init__(self, scan: _Scan, location: str) -> None:
        self.scan = scan
        self.location = location
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}

    def _pop(self) -> Any:
        return self.stack.pop() if self.stack else _UNKNOWN

    def _pop_mark(self) -> list[Any]:
        """Everything above the topmost mark, which is removed too (everything, when there
        is no mark)."""
        stack = self.stack
        for index in range(len(stack) - 1, -1, -1):
            if stack[index] is _MARK:
                items = stack[index + 1 :]
                del stack[index:]
                return items
        items = stack[:]
        stack.clear()
        return items

    def _where(self, position: int) -> str:
        return f"{self.location}@{position}"

    def _put(self, name: str, arg: Any, position: int) -> None:
        self.memo[int(arg)] = self.stack[-1] if self.stack else _UNKNOWN

    def _get(self, name: str, arg: Any, position: int) -> None:
        self.stack.append(self.memo.get(int(arg), _UNKNOWN))

    def _literal(self, name: str, arg: Any, position: int) -> None:
        self.stack.append(arg)

    def _constant(self, name: str, arg: Any, position: int) -> None:
        self.stack.append(_CONSTANTS[name])

    def _tuple_n(self, name: str, arg: Any, position: int) -> None:
        stack, size = self.stack, _TUPLE_SIZES[name]
        if len(stack) >= size:
            items = tuple(stack[-size:])
            del stack[-size:]
        else:
            items = (_UNKNOWN,) * (size - len(stack)) + tuple(stack)
            stack.clear()
        stack.append(items)

    def _tuple(self, name: str, arg: Any, position: int) -> None:
        self.stack.append(tuple(self._pop_mark()))

    def _dict(self, name: str, arg: Any, position: int) -> None:
        self.stack.append(_as_dict(self._pop_mark()))

    def _setitems(self, name: str, arg: Any, position: int) -> None:
        items = [self._pop(), self._pop()][::-1] if name == "SETITEM" else self._pop_mark()
        if self.stack and isinstance(self.stack[-1], dict):
            self.stack[-1].update(_as_dict(items))

    def _global(self, name: str, arg: Any, position: int) -> None:
        module, _, attribute = str(arg).partition(" ")
        self.scan.judge_global(module, attribute, self._where(position))
        if name == "INST":
            self._pop_mark()
            self.stack.append(_UNKNOWN)
        else:
            self.stack.append(_Global(module, attribute))

    def _stack_global(self, name: str, arg: Any, position: int) -> None:
        attribute, module = self._pop(), self._pop()
        if isinstance(module, str) and isinstance(attribute, str):
            self.scan.judge_global(module, attribute, self._where(position))
            self.stack.append(_Global(module, attribute))
        else:
            self.scan.find(
                self._where(position), "critical", "unresolvable_global",
                "STACK_GLOBAL with a module or name computed at load time",
            )  # fmt: skip
            self.stack.append(_UNKNOWN)

    def _extension(self, name: str, arg: Any, position: int) -> None:
        self.scan.extension_code(self._where(position), arg)
        self.stack.append(_UNKNOWN)

    def _reduce(self, name: str, arg: Any, position: int) -> None:
        args, function = self._pop(), self._pop()
        self.stack.append(_Call(function, args))

    def _build(self, name: str, arg: Any, position: int) -> tuple[bool, int] | object | None:
        state = self._pop()
        target = self.stack[-1] if self.stack else _UNKNOWN
        if isinstance(target, _Call) and target.function == _JOBLIB_WRAPPER:
            return self._joblib_array(state, self._where(position))
        return None

    def _joblib_array(self, state: Any, where: str) -> tuple[bool, int] | object | None:
        """The size of the raw array joblib writes right after this wrapper."""
        if not isinstance(state, dict):
            self.scan.find(
                where, "high", "malformed", "joblib array wrapper without a readable state"
            )
            return None
        dtype, shape = state.get("dtype"), state.get("shape")
        code = (
            dtype.args[0]
            if isinstance(dtype, _Call) and isinstance(dtype.args, tuple) and dtype.args
            else None
        )
        if (
            not isinstance(code, str)
            or not _DTYPE_CODE.fullmatch(code)
            or not isinstance(shape, tuple)
        ):
            self.scan.find(
                where, "high", "malformed", "joblib array of a type the scanner cannot size"
            )
            return None
        itemsize = _itemsize(code)
        if itemsize is None:
            self.scan.find(where, "high", "malformed", f"joblib array with unknown dtype {code!r}")
            return None
        if itemsize == 0:
            return _NESTED_PICKLE  # object arrays are pickled, not written raw
        count = 1
        for dimension in shape:
            if not isinstance(dimension, int) or dimension < 0:
                self.scan.find(where, "high", "malformed", "joblib array with an invalid shape")
                return None
            count *= dimension
        return "numpy_array_alignment_bytes" in state, count * itemsize


_TUPLE_SIZES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_CONSTANTS: dict[str, Any] = {"NEWTRUE": True, "NEWFALSE": False, "NONE": None, "EMPTY_TUPLE": ()}
_Handler = Callable[[_Machine, str, Any, int], Any]
_HANDLERS: dict[str, _Handler] = {
    **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), _Machine._put),
    **dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), _Machine._get),
    **dict.fromkeys(_LITERALS, _Machine._literal),
    **dict.fromkeys(_CONSTANTS, _Machine._constant),
    "MARK": lambda machine, *_: machine.stack.append(_MARK),
    "EMPTY_DICT": lambda machine, *_: machine.stack.append({}),
    **dict.fromkeys(("TUPLE1", "TUPLE2", "TUPLE3"), _Machine._tuple_n),
    "TUPLE": _Machine._tuple,
    "DICT": _Machine._dict,
    **dict.fromkeys(("SETITEM", "SETITEMS"), _Machine._setitems),
    **dict.fromkeys(("GLOBAL", "INST"), _Machine._global),
    "STACK_GLOBAL": _Machine._stack_global,
    **dict.fromkeys(("EXT1", "EXT2", "EXT4"), _Machine._extension),
    **dict.fromkeys(("REDUCE", "NEWOBJ"), _Machine._reduce),
    "BUILD": _Machine._build,
}


def _stack_effect(opcode: pickletools.OpcodeInfo) -> _Handler:
    """A handler that only keeps the stack depth right (for opcodes whose values never
    matter to the scan), precomputed from the opcode's documented stack effect."""
    actions = tuple(
        item is pickletools.markobject
        for item in reversed(opcode.stack_before)
        if item is not pickletools.stackslice
    )
    pushes = [_MARK if item is pickletools.markobject else _UNKNOWN for item in opcode.stack_after]

    def apply(machine: _Machine, name: str, arg: Any, position: int) -> None:
        for to_mark in actions:
            if to_mark:
                machine._pop_mark()
            else:
                machine._pop()
        machine.stack.extend(pushes)

    return apply


# Indexed by opcode byte (a list index is cheaper than a dict lookup, once per opcode):
# its name, how to read its argument, its handler; None for bytes that are not opcodes.
# MEMOIZE has no entry: ``pickle_stream`` applies it (and BINGET) inline, the one place.
_DISPATCH: list[tuple[str, Reader | None, _Handler] | None] = [None] * 256
_MEMOIZE, _BINGET = ord(pickle.MEMOIZE), ord(pickle.BINGET)
for _code, (_opcode, _read) in TABLE.items():
    if _code != _MEMOIZE:
        _DISPATCH[_code] = (
            _opcode.name,
            _read,
            _HANDLERS.get(_opcode.name) or _stack_effect(_opcode),
        )


def _as_dict(items: list[Any]) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for key, value in zip(items[0::2], items[1::2], strict=False):
        try:
            result[key] = value
        except TypeError:
            continue
    return result


def _stream(data: Buffer) -> Stream:
    # BytesIO over bytes shares them rather than copying; a mapped file is read in place.
    return cast(Stream, _Mapped(data)) if isinstance(data, mmap.mmap) else io.BytesIO(data)


class _Mapped:
    """A mapped file as the seekable binary file ``zipfile`` and the walker expect."""

    def __init__(self, mapping: mmap.mmap) -> None:
        self.read, self.readline = mapping.read, mapping.readline
        self.seek, self.tell = mapping.seek, mapping.tell

    def seekable(self) -> bool:
        return True


def _skip_raw_array(cursor: Cursor, raw: Any) -> None:
    aligned, size = raw
    if aligned and cursor.pos < cursor.end:
        size += 1 + cursor.data[cursor.pos]  # a padding-length byte, then the padding
    if size > cursor.end - cursor.pos:
        raise ValueError("joblib array data runs past the end of the file")
    cursor.pos += size


def _dotted(name: str) -> bool:
    """Whether *name* is a dotted Python name: all a module to import or an attribute path
    to look up in one can be."""
    return all(part.isidentifier() for part in name.split("."))


def _files(root: Path) -> tuple[list[tuple[Path, int]], list[Path]]:
    """Every regular file under *root* (or *root* itself) with its size, in path order,
    and the symbolic links that were not followed. A link to a regular file is scanned as
    that file (what loading through the link would read); links to folders are not
    followed (no loops, no escaping the tree) and neither are links to anything else.
    Directory entries carry their type, so listing costs one ``stat`` per file."""
    if root.is_file():
        return [(root, root.stat().st_size)], []
    found: list[tuple[Path, int]] = []
    skipped: list[Path] = []
    pending = [str(root)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=True):
                    found.append((Path(entry.path), entry.stat(follow_symlinks=True).st_size))
                elif entry.is_symlink():
                    skipped.append(Path(entry.path))
    found.sort(key=lambda item: item[0].parts)
    skipped.sort(key=lambda path: path.parts)
    return found, skipped


def scan_bytes(data: bytes, name: str = "<bytes>") -> ScanResult:
    """Scan in-memory bytes as a file called *name*."""
    result = ScanResult(name, files=1)
    _Scan(result).blob(bytes(data), name, 0)
    return result


def scan_path(path: Path) -> ScanResult:
    """Scan a file, or every file under a folder."""
    result = ScanResult(str(path))
    scan = _Scan(result)
    if not path.exists():
        from ..errors import UsageError

        raise UsageError(f"{path} does not exist")
    base = path.parent if path.is_dir() else None
    files, skipped = _files(path)
    for link in skipped:
        scan.find(
            str(link.relative_to(base) if base is not None else link), "medium", "symlink",
            "symbolic link to a folder or to no regular file: not followed, not scanned",
        )  # fmt: skip
    for file, size in files:
        result.files += 1
        if size > MAX_BYTES:
            scan.find(str(file), "high", "limit", f"{size} bytes is over the scan limit")
            continue
        name = str(file.relative_to(base)) if base is not None else file.name
        with open(file, "rb") as handle:
            if size <= _READ_WHOLE:
                scan.blob(handle.read(), name, 0)
                continue
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                scan.blob(data, name, 0)
    return result


def report_json(result: ScanResult) -> str:
    return json.dumps(result.to_dict(), indent=2)
