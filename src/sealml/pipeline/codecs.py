"""How stage inputs and outputs become bytes, deterministically.

The same object always gives the same bytes, so the same pipeline gives the same artifact
digests on every executor and repeated runs hit the cache.

* ``dataset``: a pandas DataFrame or an Arrow table, as Parquet (read back as a DataFrame);
* ``model``: a scikit-learn estimator, with skops (never pickle), normalised so the zip
  holds no timestamps or memory addresses;
* ``report``: a JSON-able dict, as sorted-key JSON;
* ``file``: bytes as they are.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import UsageError

# Types a stored model may contain; anything else makes loading fail. Stage outputs are
# signed and verified before loading, this is defence in depth against a bad signer.
_MODEL_MODULES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")
_MODEL_TYPES = frozenset({"functools.partial"})


@dataclass(frozen=True)
class Codec:
    artifact_kind: str
    media_type: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


def _encode_dataset(value: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(value, pa.Table):
        table = value
    else:
        import pandas as pd

        if not isinstance(value, pd.DataFrame):
            raise TypeError(
                f"a dataset must be a pandas DataFrame or Arrow table, not {type(value).__name__}"
            )
        table = pa.Table.from_pandas(value, preserve_index=True)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _decode_dataset(data: bytes) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data)).to_pandas()


_ID_FIELD = re.compile(rb'"__id__": (\d+)')
_FILE_FIELD = re.compile(rb'"file": "(\d+)\.npy"')


def _normalise_skops(data: bytes) -> bytes:
    """Rewrite a skops zip so equal models give equal bytes: object ids (memory addresses)
    renumbered in order of appearance, entries sorted, timestamps fixed."""
    source = zipfile.ZipFile(io.BytesIO(data))
    schema = source.read("schema.json")
    numbers: dict[bytes, bytes] = {}
    for match in re.finditer(rb'"__id__": (\d+)|"file": "(\d+)\.npy"', schema):
        original = match.group(1) or match.group(2)
        numbers.setdefault(original, str(len(numbers)).encode())
    schema = _ID_FIELD.sub(lambda m: b'"__id__": ' + numbers[m.group(1)], schema)
    schema = _FILE_FIELD.sub(lambda m: b'"file": "' + numbers[m.group(1)] + b'.npy"', schema)
    entries = {"schema.json": schema}
    for info in source.infolist():
        if info.filename == "schema.json":
            continue
        stem = info.filename.removesuffix(".npy").encode()
        renamed = (
            numbers.get(stem, stem).decode() + ".npy"
            if info.filename.endswith(".npy")
            else info.filename
        )
        entries[renamed] = source.read(info.filename)
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as target:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o600 << 16
            target.writestr(info, entries[name])
    return sink.getvalue()


def _encode_model(value: Any) -> bytes:
    import skops.io

    return _normalise_skops(skops.io.dumps(value))


def _decode_model(data: bytes) -> Any:
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=data)
    refused = [t for t in untrusted if not t.startswith(_MODEL_MODULES) and t not in _MODEL_TYPES]
    if refused:
        raise TypeError(f"the model contains types outside the allowlist: {', '.join(refused[:3])}")
    return skops.io.loads(data, trusted=untrusted)


def _encode_report(value: Any) -> bytes:
    if not isinstance(value, dict):
        raise TypeError(f"a report must be a dict, not {type(value).__name__}")
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def _encode_file(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"a file output must be bytes or str, not {type(value).__name__}")


CODECS: dict[str, Codec] = {
    "dataset": Codec("dataset", "application/vnd.apache.parquet", _encode_dataset, _decode_dataset),
    "model": Codec("model", "application/vnd.skops+zip", _encode_model, _decode_model),
    "report": Codec("report", "application/json", _encode_report, orjson.loads),
    "file": Codec("other", "application/octet-stream", _encode_file, bytes),
    "vault": Codec("vault", "application/json", _encode_report, orjson.loads),
}
TYPES = tuple(CODECS)


def encode(kind: str, value: Any, where: str) -> bytes:
    """Serialise a stage output; a wrong type is a UsageError naming *where*."""
    try:
        return CODECS[kind].encode(value)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{where}: {error}") from None


def decode(kind: str, data: bytes) -> Any:
    return CODECS[kind].decode(data)
