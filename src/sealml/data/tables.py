"""Reading tabular files safely: bounded sizes, strict encodings, one-line errors.

Everything here fails with a UsageError that names the file and says what is wrong (and,
where it can, where): a file too large, a line too long (a 2 GB single line never reaches
the parser), bytes that are not valid in the declared encoding, broken CSV quoting,
malformed JSON lines or Parquet. Gzip input is decompressed with the same size limit, so a
compression bomb is refused too.
"""

from __future__ import annotations

import gzip
import io
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

FORMATS = ("csv", "parquet", "jsonl")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds on what is read: total bytes (after decompression) and bytes per line."""

    max_bytes: int = 4 << 30
    max_line_bytes: int = 64 << 20


# (file name suffix, table format, media type of the plain file)
_SUFFIXES = (
    (".csv", "csv", "text/csv"),
    (".tsv", "csv", "text/tab-separated-values"),
    (".txt", "csv", "text/plain"),
    (".parquet", "parquet", "application/vnd.apache.parquet"),
    (".pq", "parquet", "application/vnd.apache.parquet"),
    (".jsonl", "jsonl", "application/jsonl"),
    (".ndjson", "jsonl", "application/x-ndjson"),
    (".json", "jsonl", "application/json"),
)
_GZIP_MEDIA_TYPE = "application/gzip"


def media_type_of(name: str) -> str | None:
    """The media type a table file's name implies (gzip for ``.gz``), None if unknown."""
    lowered = name.lower()
    if lowered.endswith(".gz"):
        return _GZIP_MEDIA_TYPE if _format_by_name(lowered[:-3]) else None
    return next((media for suffix, _, media in _SUFFIXES if lowered.endswith(suffix)), None)


def _format_by_name(lowered: str) -> str | None:
    return next((kind for suffix, kind, _ in _SUFFIXES if lowered.endswith(suffix)), None)


def detect_format(name: str, media_type: str | None = None) -> str:
    """The format a file name implies (``.gz`` suffixes ignored), else its media type."""
    kind = _format_by_name(name.lower().removesuffix(".gz"))
    if kind is None and media_type is not None:
        kind = next((k for _, k, media in _SUFFIXES if media == media_type), None)
    if kind is None:
        raise UsageError(
            f"cannot tell the format of {name!r} from its name or media type; "
            f"give it: one of {', '.join(FORMATS)}"
        )
    return kind


def _inflate(data: bytes, limits: Limits, what: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    inflater = zlib.decompressobj(wbits=31)
    out = bytearray()
    view = memoryview(data)
    try:
        for start in range(0, len(view), _CHUNK):
            out += inflater.decompress(
                view[start : start + _CHUNK], limits.max_bytes + 1 - len(out)
            )
            if len(out) > limits.max_bytes:
                raise UsageError(f"{what} expands beyond {limits.max_bytes} bytes; refused")
        out += inflater.flush()
    except (zlib.error, gzip.BadGzipFile) as error:
        raise UsageError(f"{what} is not valid gzip: {error}") from None
    if not inflater.eof:
        raise UsageError(f"{what} is not valid gzip: the stream is truncated")
    if len(out) > limits.max_bytes:
        raise UsageError(f"{what} expands beyond {limits.max_bytes} bytes; refused")
    return bytes(out)


def read_source(path: Path, limits: Limits, *, text: bool = True) -> bytes:
    """Read a file within the limits. For text, line lengths are checked while reading, so a
    huge line is refused after one limit's worth of bytes, not after the whole file."""
    what = str(path)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise UsageError(f"{what} is {size} bytes, over the {limits.max_bytes}-byte limit")
        chunks: list[bytes] = []
        with path.open("rb") as handle:
            line_start = 0
            offset = 0
            while chunk := handle.read(_CHUNK * 8):
                if text and not (offset == 0 and chunk[:2] == b"\x1f\x8b"):
                    first, last = chunk.find(b"\n"), chunk.rfind(b"\n")
                    end = offset + (first if first >= 0 else len(chunk))
                    if end - line_start > limits.max_line_bytes:
                        raise _long_line(what, line_start, limits)
                    if last >= 0:
                        check_lines(chunk[first + 1 : last + 1], limits, what, offset + first + 1)
                        line_start = offset + last + 1
                chunks.append(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        raise UsageError(f"{what} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} is a folder, not a file") from None
    except PermissionError:
        raise UsageError(f"{what} is not readable") from None
    return b"".join(chunks)


def _long_line(what: str, start: int, limits: Limits) -> UsageError:
    return UsageError(
        f"{what}: a line starting at byte {start} is longer than "
        f"{limits.max_line_bytes} bytes; refused"
    )


def check_lines(data: bytes, limits: Limits, what: str, base: int = 0) -> None:
    """Refuse text whose longest line exceeds the limit, without splitting it into lines."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start, start + limits.max_line_bytes + 1)
        if end < 0:
            if len(data) - start > limits.max_line_bytes:
                raise _long_line(what, base + start, limits)
            return
        start = end + 1


def _decode(data: bytes, encoding: str, what: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{what} is not valid {encoding} (byte {error.start}); give the right encoding"
        ) from None
    except LookupError:
        raise UsageError(f"unknown encoding {encoding!r}") from None


def parse_table(
    data: bytes,
    fmt: str,
    what: str,
    *,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    limits: Limits | None = None,
) -> Any:
    """Parse bytes into a pandas DataFrame."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    limits = limits or Limits()
    data = _inflate(data, limits, what)
    if fmt == "parquet":
        try:
            return pq.read_table(io.BytesIO(data)).to_pandas()
        except (pa.ArrowException, OSError, ValueError) as error:
            raise UsageError(
                f"{what} is not a readable Parquet file: {error}".splitlines()[0]
            ) from None
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    check_lines(data, limits, what)
    text = _decode(data, encoding, what)
    try:
        if fmt == "jsonl":
            return pd.read_json(io.StringIO(text), lines=True)
        with warnings.catch_warnings():
            # A row with more fields than the header is an error, not data to drop.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                io.StringIO(text),
                sep=delimiter
                or ("\t" if what.lower().removesuffix(".gz").endswith(".tsv") else ","),
                skipinitialspace=True,
                engine="c",
                index_col=False,
            )
    except pd.errors.EmptyDataError:
        raise UsageError(f"{what} holds no data") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as error:
        message = (
            str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        )
        raise UsageError(f"{what} cannot be parsed as {fmt}: {message}") from None
