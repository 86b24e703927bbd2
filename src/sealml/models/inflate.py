"""Compressed model files, inflated within a bound for the scanner.

joblib compresses with zlib, gzip, bz2, xz or raw LZMA and ``joblib.load`` recognises each
by its first bytes, whatever the file is called; ``pandas.read_pickle`` also reads
Zstandard. So does this module, by the same first bytes. Each decompressor is asked for at
most a given number of bytes, so a compression bomb costs the scanner no more than that.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Any, Literal, NamedTuple

import zstandard

Compression = Literal["zlib", "gzip", "bz2", "xz", "lzma", "zstd", "lz4"]

# joblib's own prefixes (joblib/compressor.py): what its loader dispatches on.
_PREFIXES: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZ", "bz2"),
    (b"\xfd7zXZ", "xz"),
    (b"\x5d\x00", "lzma"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),  # joblib inflates it when the lz4 package is installed
)
# Zstandard output is bounded by feeding its input a little at a time: a block of a few
# bytes inflates to at most 128 KiB, so 4 KiB of input to at most about 128 MiB.
_ZSTD_STEP = 4096


class Inflated(NamedTuple):
    """What a bounded inflation gave: the bytes, whether the stream ended within them, and
    whether it goes on beyond the bound (neither: it was cut short)."""

    data: bytes
    ended: bool
    over_limit: bool


class DamagedError(ValueError):
    """The data is not the compressed stream its first bytes announce."""


class UnsupportedError(ValueError):
    """A compression this module does not inflate (so what it holds is not scanned)."""


def compression_of(head: bytes) -> Compression | None:
    """The compression a file starting with *head* is read with, or None."""
    for prefix, kind in _PREFIXES:
        if head.startswith(prefix):
            return kind
    # zlib: a deflate method byte and a header checksum (a multiple of 31)
    if head[:1] == b"\x78" and len(head) > 1 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    return None


def inflate(kind: Compression, data: Any, limit: int) -> Inflated:
    """At most *limit* bytes of *data* inflated. A stream cut short gives what it holds;
    data that is not of *kind* raises DamagedError, LZ4 UnsupportedError."""
    if kind == "lz4":
        raise UnsupportedError(
            "LZ4-compressed: joblib inflates it when the lz4 package is installed; "
            "sealml does not, so its content was not scanned"
        )
    try:
        if kind in ("zlib", "gzip"):
            inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if kind == "gzip" else 0))
            out = inflater.decompress(data, limit)
            return Inflated(out, inflater.eof, bool(inflater.unconsumed_tail))
        if kind == "zstd":
            return _inflate_zstd(data, limit)
        decompressor: Any
        if kind == "bz2":
            decompressor = bz2.BZ2Decompressor()
        else:
            decompressor = lzma.LZMADecompressor(
                lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE
            )
        out = decompressor.decompress(data, limit)
        ended = decompressor.eof
        return Inflated(out, ended, not ended and not decompressor.needs_input)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as error:
        raise DamagedError(f"damaged {kind} data: {str(error)[:100]}") from None


def _inflate_zstd(data: Any, limit: int) -> Inflated:
    inflater = zstandard.ZstdDecompressor().decompressobj()
    parts: list[bytes] = []
    size = 0
    with memoryview(data) as view:  # released before a mapped file is closed
        for start in range(0, len(view), _ZSTD_STEP):
            with view[start : start + _ZSTD_STEP] as step:
                part = inflater.decompress(step)
            size += len(part)
            if size > limit:
                return Inflated(b"", False, True)
            parts.append(part)
            if inflater.eof:
                break
    return Inflated(b"".join(parts), bool(inflater.eof), False)
