"""A static scanner for model files: it never unpickles or executes anything.

It walks pickle opcode streams with a small stack machine that resolves every global the
stream would import: ``GLOBAL``/``INST`` names, ``STACK_GLOBAL`` names built from strings on
the stack or fetched back from the memo, and extension-registry codes; each is judged
against the allowlist. It opens zip archives (PyTorch checkpoints, ``.npz``, nested
archives), legacy PyTorch files (several pickles in a row), joblib files (pickles with raw
array data between opcodes, plain or zlib-compressed) and NumPy ``.npy`` files (whose object
arrays are pickles). Malformed or truncated streams, archive bombs, absurd sizes and deep
nesting are findings, never crashes.
"""

from __future__ import annotations

import ast
import io
import json
import mmap
import pickletools
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .allowlist import judge
from .opcodes import Stream, walk

# Scanned data is either bytes in memory (archive members, inflated data) or a file mapped
# read-only, which is walked in place without being copied.
Buffer = bytes | mmap.mmap

MAX_DEPTH = 4
MAX_ENTRIES = 10_000
MAX_RATIO = 200
MAX_BYTES = 64 << 30
MAX_OPCODES = 50_000_000
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
            "globals": sorted(self.globals),
            "findings": [f.to_dict() for f in self.findings],
        }


class _Scan:
    def __init__(self, result: ScanResult) -> None:
        self.result = result

    def find(self, location: str, severity: str, kind: str, detail: str) -> None:
        self.result.findings.append(Finding(location, severity, kind, detail))

    # -- pickles --------------------------------------------------------------------------

    def pickle_stream(self, data: Buffer, location: str, start: int = 0, depth: int = 0) -> int:
        """Walk one pickle starting at *start*; returns the offset after its STOP (or the end
        of the data if it is malformed)."""
        if depth > MAX_DEPTH:
            self.find(location, "high", "nesting", f"pickles nested deeper than {MAX_DEPTH}")
            return len(data)
        machine = _Machine(self, location)
        stream = _stream(data)
        stream.seek(start)
        count = 0
        try:
            for opcode, arg, position in walk(stream, len(data)):
                count += 1
                if count > MAX_OPCODES or len(machine.stack) > MAX_STACK:
                    self.find(location, "high", "limit", "pickle too large to analyse; refused")
                    return len(data)
                raw = machine.step(opcode, arg, position)
                if raw is _NESTED_PICKLE:
                    # joblib writes an object array as a whole pickle of its own, with its
                    # own memo, in the middle of the outer stream.
                    where = f"{location}@{position}:objects"
                    stream.seek(self.pickle_stream(data, where, stream.tell(), depth + 1))
                elif raw is not None:
                    _skip_raw_array(stream, raw, len(data))
        except Exception as error:
            self.find(
                location, "high", "malformed", f"pickle stream is malformed: {str(error)[:120]}"
            )
            return len(data)
        return stream.tell()

    def judge_global(self, module: str, name: str, where: str) -> None:
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
        elif head.startswith(b"\x93NUMPY"):
            self.npy(data, location)
        elif head[:1] == b"\x78" and len(data) > 2 and (head[0] * 256 + head[1]) % 31 == 0:
            self.compressed(data, location, depth)
        elif (
            head[:1] == b"\x80"
            or location.lower().endswith(_PICKLE_SUFFIXES)
            or _looks_like_protocol0(head)
        ):
            self.pickles(data, location)

    def compressed(self, data: Buffer, location: str, depth: int) -> None:
        """zlib-compressed joblib files: inflate within bounds, then scan."""
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(data, MAX_RATIO * max(len(data), 1 << 20))
        except zlib.error:
            return  # not compressed data after all
        if inflater.unconsumed_tail:
            self.find(location, "high", "bomb", "compressed data expands beyond the ratio limit")
            return
        self.blob(out, f"{location}!zlib", depth + 1)

    def archive(self, data: Buffer, location: str, depth: int) -> None:
        try:
            archive = zipfile.ZipFile(_stream(data))
            entries = archive.infolist()
        except (zipfile.BadZipFile, ValueError, OSError) as error:
            self.find(location, "high", "malformed", f"damaged zip archive: {error}")
            return
        if len(entries) > MAX_ENTRIES:
            self.find(location, "high", "bomb", f"{len(entries)} archive entries")
            return
        total = 0
        for entry in entries:
            where = f"{location}!{entry.filename}"
            if entry.is_dir():
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
            self.result.members += 1
            name = entry.filename.lower()
            if name.endswith(("data.pkl", ".pkl", ".pickle")) or content[:1] == b"\x80":
                self.result.bytes += len(content)
                self.pickles(content, where)
            else:
                self.blob(content, where, depth + 1)

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


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass(frozen=True)
class _Call:
    function: Any
    args: Any


_LITERALS = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
}  # fmt: skip
_JOBLIB_WRAPPER = _Global("joblib.numpy_pickle", "NumpyArrayWrapper")
_DTYPE_CODE = re.compile(r"[<>|=]?[a-zA-Z]\d*(\[[a-zA-Z0-9]+\])?")


class _Machine:
    """Just enough of the unpickler's stack to know every global a stream imports, and the
    shape of joblib's raw arrays, without creating any object."""

    def __init__(self, scan: _Scan, location: str) -> None:
        self.scan = scan
        self.location = location
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}

    def _pop(self) -> Any:
        return self.stack.pop() if self.stack else _UNKNOWN

    def _pop_mark(self) -> list[Any]:
        items: list[Any] = []
        while self.stack and self.stack[-1] is not _MARK:
            items.append(self.stack.pop())
        if self.stack:
            self.stack.pop()
        items.reverse()
        return items

    def step(
        self, opcode: pickletools.OpcodeInfo, arg: Any, position: int
    ) -> tuple[bool, int] | object | None:
        """Apply one opcode; returns (aligned, bytes) when raw joblib array data follows, or
        ``_NESTED_PICKLE`` when a joblib object array (a pickle of its own) does."""
        name, stack = opcode.name, self.stack
        where = f"{self.location}@{position}"
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[int(arg)] = stack[-1] if stack else _UNKNOWN
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = stack[-1] if stack else _UNKNOWN
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(self.memo.get(int(arg), _UNKNOWN))
        elif name in _LITERALS:
            stack.append(arg)
        elif name in ("NEWTRUE", "NEWFALSE", "NONE"):
            stack.append({"NEWTRUE": True, "NEWFALSE": False, "NONE": None}[name])
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            items = [self._pop() for _ in range(count)]
            stack.append(tuple(reversed(items)))
        elif name == "TUPLE":
            stack.append(tuple(self._pop_mark()))
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "DICT":
            items = self._pop_mark()
            stack.append(_as_dict(items))
        elif name in ("SETITEM", "SETITEMS"):
            items = [self._pop(), self._pop()][::-1] if name == "SETITEM" else self._pop_mark()
            if stack and isinstance(stack[-1], dict):
                stack[-1].update(_as_dict(items))
        elif name in ("GLOBAL", "INST"):
            module, _, attribute = str(arg).partition(" ")
            self.scan.judge_global(module, attribute, where)
            if name == "INST":
                self._pop_mark()
                stack.append(_UNKNOWN)
            else:
                stack.append(_Global(module, attribute))
        elif name == "STACK_GLOBAL":
            attribute, module = self._pop(), self._pop()
            if isinstance(module, str) and isinstance(attribute, str):
                self.scan.judge_global(module, attribute, where)
                stack.append(_Global(module, attribute))
            else:
                self.scan.find(
                    where, "critical", "unresolvable_global",
                    "STACK_GLOBAL with a module or name computed at load time",
                )  # fmt: skip
                stack.append(_UNKNOWN)
        elif name.startswith("EXT"):
            self.scan.find(
                where, "high", "extension_code",
                f"imports callable #{arg} from the copyreg extension registry",
            )  # fmt: skip
            stack.append(_UNKNOWN)
        elif name in ("REDUCE", "NEWOBJ"):
            args, function = self._pop(), self._pop()
            stack.append(_Call(function, args))
        elif name == "BUILD":
            state = self._pop()
            target = stack[-1] if stack else _UNKNOWN
            if isinstance(target, _Call) and target.function == _JOBLIB_WRAPPER:
                return self._joblib_array(state, where)
        else:
            self._generic(opcode)
        return None

    def _generic(self, opcode: pickletools.OpcodeInfo) -> None:
        for item in reversed(opcode.stack_before):
            if item is pickletools.markobject:
                self._pop_mark()
            elif item is not pickletools.stackslice:
                self._pop()
        for item in opcode.stack_after:
            self.stack.append(_MARK if item is pickletools.markobject else _UNKNOWN)

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
        import numpy

        try:
            array_type = numpy.dtype(code)
        except TypeError:
            self.scan.find(where, "high", "malformed", f"joblib array with unknown dtype {code!r}")
            return None
        if array_type.hasobject:
            return _NESTED_PICKLE  # object arrays are pickled, not written raw
        count = 1
        for dimension in shape:
            if not isinstance(dimension, int) or dimension < 0:
                self.scan.find(where, "high", "malformed", "joblib array with an invalid shape")
                return None
            count *= dimension
        return "numpy_array_alignment_bytes" in state, count * array_type.itemsize


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


def _skip_raw_array(stream: Stream, raw: Any, end: int) -> None:
    aligned, size = raw
    if aligned:
        padding = stream.read(1)
        if padding:
            size += padding[0]
    if size > end - stream.tell():
        raise ValueError("joblib array data runs past the end of the file")
    stream.seek(size, io.SEEK_CUR)


def _looks_like_protocol0(head: bytes) -> bool:
    """Protocol 0/1 pickles start with a MARK, GLOBAL, or a push opcode."""
    return head[:1] in (b"(", b"c", b"]", b"}", b")") and head[1:2] != b""


def _paths(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


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
    for file in _paths(path):
        result.files += 1
        size = file.stat().st_size
        if size > MAX_BYTES:
            scan.find(str(file), "high", "limit", f"{size} bytes is over the scan limit")
            continue
        name = str(file.relative_to(path.parent) if path.is_dir() else file.name)
        if size == 0:
            scan.blob(b"", name, 0)
            continue
        with (
            file.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            scan.blob(data, name, 0)
    return result


def report_json(result: ScanResult) -> str:
    return json.dumps(result.to_dict(), indent=2)
