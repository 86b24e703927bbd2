"""Saving and loading models without pickle, and loading pickles only when they are clean.

* scikit-learn estimators are saved with skops, normalised so equal models give equal bytes,
  and loaded only when every type they name passes the same allowlist the scanner uses;
* tensors (a mapping of names to arrays) are saved with safetensors;
* ONNX models are run by ONNX Runtime after a check of what they would reach outside the
  file (:mod:`sealml.models.onnxmodels`);
* a pickle or joblib file is loaded only after a clean scan, and then through an unpickler
  whose ``find_class`` refuses anything outside the allowlist (the scan and the unpickler
  check the same list, so a stream the scanner misjudged still cannot import a callable).
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import KeysView, Mapping
from pathlib import Path
from typing import Any, cast

from ..errors import IntegrityError, UsageError
from .allowlist import judge
from .inflate import compression_of
from .onnxmodels import ONNX_MEDIA_TYPE, load_onnx, onnx_problems
from .scanner import scan_bytes
from .skopsaudit import is_skops_file, severity, untrusted_types

SKOPS_MEDIA_TYPE = "application/vnd.skops+zip"
SAFETENSORS_MEDIA_TYPE = "application/vnd.safetensors"
PICKLE_MEDIA_TYPE = "application/python-pickle"
_MEDIA_TYPES = {
    ".skops": SKOPS_MEDIA_TYPE,
    ".safetensors": SAFETENSORS_MEDIA_TYPE,
    ".pkl": PICKLE_MEDIA_TYPE,
    ".pickle": PICKLE_MEDIA_TYPE,
    ".joblib": PICKLE_MEDIA_TYPE,
    ".onnx": ONNX_MEDIA_TYPE,
}


def dump_skops(model: Any) -> bytes:
    """A scikit-learn model as normalised skops bytes: object ids (memory addresses) and
    file names renumbered in order of appearance, compact JSON, entries sorted,
    timestamps fixed, so equal models give equal bytes.

    The state comes from skops's own ``get_state`` (the function ``skops.io.dumps`` uses);
    only the writing differs: ``dumps`` indents its JSON, which takes the pure-Python
    encoder and most of the time."""
    import skops
    from skops.io._utils import SaveContext, get_state

    files = _Entries()
    context = SaveContext(zip_file=cast(zipfile.ZipFile, files))
    state = get_state(model, context)
    context.clear_memo()
    state["protocol"] = context.protocol
    state["_skops_version"] = skops.__version__
    numbers: dict[str, int] = {}
    renamed: dict[str, str] = {}
    _renumber(state, numbers, renamed)
    entries = {renamed.get(n, n): data for n, data in files.entries.items()}
    entries["schema.json"] = json.dumps(state, separators=(",", ":")).encode()
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as target:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o600 << 16
            target.writestr(info, entries[name])
    return sink.getvalue()


class _Entries:
    """What skops's state functions write their array files to: they only call
    ``writestr`` and ``namelist``, so the files are kept in memory and written to the model's
    zip once, in sorted order, rather than zipped twice."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}

    def writestr(self, name: str, data: bytes | memoryview) -> None:
        self.entries[name] = bytes(data)

    def namelist(self) -> KeysView[str]:
        return self.entries.keys()


def _renumber(node: Any, numbers: dict[str, int], renamed: dict[str, str]) -> None:
    """Replace ``__id__`` values and ``file`` names by their order of appearance.

    A JSON scalar (a number, a string) gets a number of its own at every appearance:
    whether two equal floats are one object or two is an accident of how the model was
    built or copied (pickle does not keep float identity), not part of the model, and a
    scalar is rebuilt from its content anyway. Shared mutable objects keep one number."""
    if isinstance(node, list | tuple):
        for item in node:
            _renumber(item, numbers, renamed)
        return
    if not isinstance(node, dict):
        return
    scalar = node.get("__loader__") == "JsonNode"
    for key, value in node.items():
        if key == "__id__" and isinstance(value, int):
            original = f"scalar-{len(numbers)}" if scalar else str(value)
            node[key] = numbers.setdefault(original, len(numbers))
        elif key == "file" and isinstance(value, str):
            stem, dot, suffix = value.partition(".")
            name = f"{numbers.setdefault(stem, len(numbers))}{dot}{suffix}"
            node[key] = renamed.setdefault(value, name)
        else:
            _renumber(value, numbers, renamed)


def load_skops(data: bytes) -> Any:
    """Load skops bytes, refusing any type the allowlist does not accept."""
    import skops.io

    untrusted = untrusted_types(data)
    refused = [name for name in untrusted if severity(name) is not None]
    if refused:
        raise IntegrityError(
            f"the model names types outside the allowlist: {', '.join(refused[:3])}"
        )
    return skops.io.loads(data, trusted=untrusted)


def check_model_file(path: Path, media_type: str) -> None:
    """Refuse a skops or safetensors file that is not one (its shape only: what a skops
    file names is the scanner's to judge)."""
    if media_type == SKOPS_MEDIA_TYPE:
        if not is_skops_file(path.read_bytes()):
            raise UsageError(f"{path.name}: not a skops model file")
    elif media_type == SAFETENSORS_MEDIA_TYPE:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as tensors:
                tensors.keys()
        except Exception as error:  # safetensors raises its own SafetensorError
            raise UsageError(f"not a safetensors file: {str(error)[:120]}") from None
    elif media_type == ONNX_MEDIA_TYPE:
        malformed = [p for p in onnx_problems(path.read_bytes()) if p[1] == "malformed"]
        if malformed:
            raise UsageError(f"{path.name}: {malformed[0][2]}")


def dump_tensors(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """Named NumPy arrays as safetensors bytes (no code, just a header and raw data)."""
    import numpy
    from safetensors.numpy import save

    arrays = {name: numpy.ascontiguousarray(value) for name, value in tensors.items()}
    return save(arrays, metadata=dict(metadata) if metadata else None)


def load_tensors(data: bytes) -> dict[str, Any]:
    """Named NumPy arrays from safetensors bytes; a malformed header is a UsageError."""
    from safetensors.numpy import load

    try:
        return load(data)
    except Exception as error:  # safetensors raises its own SafetensorError
        raise UsageError(f"not a safetensors file: {str(error)[:120]}") from None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that imports only allowlisted classes and functions."""

    def find_class(self, module: str, name: str) -> Any:
        if judge(module, name) is not None:
            raise IntegrityError(f"refused to import {module}.{name} while unpickling")
        return super().find_class(module, name)


def load_pickle(data: bytes, name: str = "model.pkl") -> Any:
    """Load a pickle or joblib file after a clean scan, with the restricted unpickler.

    Anything short of a ``safe`` verdict is refused before a single opcode runs.
    """
    result = scan_bytes(data, name)
    if result.verdict != "safe":
        worst = result.worst
        assert worst is not None
        raise IntegrityError(f"{name} is {result.verdict}: {worst.detail} at {worst.location}")
    if _is_joblib(data):
        return _load_joblib(data)
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except IntegrityError:
        raise
    except Exception as error:
        raise UsageError(f"{name} could not be unpickled: {str(error)[:120]}") from None


def _is_joblib(data: bytes) -> bool:
    """A joblib file: its array wrapper named, or compressed (joblib inflates it)."""
    return b"joblib.numpy_pickle" in data[: 1 << 16] or compression_of(data[:8]) is not None


def _load_joblib(data: bytes) -> Any:
    """joblib files through joblib's own array-aware unpickler, restricted the same way."""
    from joblib import numpy_pickle

    class RestrictedNumpyUnpickler(numpy_pickle.NumpyUnpickler):  # type: ignore[misc]
        def find_class(self, module: str, name: str) -> Any:
            if judge(module, name) is not None:
                raise IntegrityError(f"refused to import {module}.{name} while unpickling")
            return super().find_class(module, name)

    stream = io.BytesIO(data)
    try:
        with numpy_pickle._validate_fileobject_and_memmap(stream, "", None) as (handle, _):
            unpickler = RestrictedNumpyUnpickler("", handle, ensure_native_byte_order=True)
            return unpickler.load()
    except IntegrityError:
        raise
    except Exception as error:
        raise UsageError(f"the joblib file could not be loaded: {str(error)[:120]}") from None


def media_type_for(filename: str) -> str:
    """The media type of a model file by its extension; unknown formats are refused."""
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    try:
        return _MEDIA_TYPES[suffix]
    except KeyError:
        known = ", ".join(sorted(_MEDIA_TYPES))
        raise UsageError(f"{filename}: unsupported model format (known: {known})") from None


def load_model(data: bytes, media_type: str | None, name: str) -> Any:
    """A model from its bytes, by media type: skops, safetensors and ONNX natively, pickles
    only through :func:`load_pickle`."""
    from .structure import check_structure

    if media_type == SAFETENSORS_MEDIA_TYPE:
        return load_tensors(data)
    if media_type == ONNX_MEDIA_TYPE:
        return load_onnx(data, name)
    if media_type == SKOPS_MEDIA_TYPE:
        model = load_skops(data)
    elif media_type == PICKLE_MEDIA_TYPE:
        model = load_pickle(data, name)
    else:
        raise UsageError(f"{name}: no loader for media type {media_type!r}")
    check_structure(model)
    return model
