"""How stage inputs and outputs become bytes, deterministically.

The same object always gives the same bytes, so the same pipeline gives the same artifact
digests on every executor and repeated runs hit the cache.

* ``dataset``: a pandas DataFrame or an Arrow table, as Parquet with zstd (read back as
  the same DataFrame);
* ``model``: a scikit-learn estimator, with skops (never pickle), normalised so the zip
  holds no timestamps or memory addresses;
* ``report``: a JSON-able dict, as sorted-key JSON;
* ``file``: bytes as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import UsageError
from ..models.formats import SKOPS_MEDIA_TYPE, dump_skops, load_skops


@dataclass(frozen=True)
class Codec:
    artifact_kind: str
    media_type: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
_PARQUET_MAGIC = b"PAR1"


def _encode_dataset(value: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(value, pa.Table):
        table = value
    else:
        # preserve_index=None keeps a RangeIndex as metadata, so the frame reads back
        # exactly (a RangeIndex stays one).
        table = pa.Table.from_pandas(value, preserve_index=None)
    # Parquet re-encodes every value, so equal frames give equal bytes however their
    # memory is laid out (an Arrow IPC file would copy undefined padding bits).
    sink = pa.BufferOutputStream()
    # zstd at level 1 is as small here as the default level and faster; statistics serve
    # readers that skip row groups, and sealed datasets are read whole.
    pq.write_table(table, sink, compression="zstd", compression_level=1, write_statistics=False)
    return bytes(sink.getvalue().to_pybytes())


def decode_dataset(data: bytes) -> Any:
    """A dataset's Parquet bytes as a DataFrame."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not data.startswith(_PARQUET_MAGIC):
        raise ValueError("not a Parquet file")
    return pq.read_table(pa.py_buffer(data)).to_pandas()


def _encode_report(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def _encode_file(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


CODECS: dict[str, Codec] = {
    "dataset": Codec("dataset", PARQUET_MEDIA_TYPE, _encode_dataset, decode_dataset),
    # Stage outputs are signed and verified before loading; the skops allowlist is defence
    # in depth against a bad signer.
    "model": Codec("model", SKOPS_MEDIA_TYPE, dump_skops, load_skops),
    "report": Codec("report", "application/json", _encode_report, orjson.loads),
    "file": Codec("other", "application/octet-stream", _encode_file, bytes),
    "vault": Codec("vault", "application/json", _encode_report, orjson.loads),
}
TYPES = tuple(CODECS)


def check(kind: str, value: Any, where: str) -> None:
    """Refuse a value of the wrong type for *kind* with a UsageError naming *where*
    (cheaply: the runner checks before the next stage, the encoding happens later)."""
    import pandas as pd
    import pyarrow as pa

    expected: tuple[type, ...] | None = {
        "dataset": (pd.DataFrame, pa.Table),
        "report": (dict,),
        "vault": (dict,),
        "file": (str, bytes, bytearray, memoryview),
    }.get(kind)
    if expected is not None and not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in expected)
        raise UsageError(f"{where}: a {kind} must be {names}, not {type(value).__name__}")


def encode(kind: str, value: Any, where: str) -> bytes:
    """Serialise a stage output; a wrong type or a value the format cannot hold is a
    UsageError naming *where*."""
    check(kind, value, where)
    try:
        return CODECS[kind].encode(value)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{where}: {error}") from None


def decode(kind: str, data: bytes) -> Any:
    return CODECS[kind].decode(data)
