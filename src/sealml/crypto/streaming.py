"""Tink's AES-GCM-HKDF streaming AEAD, written on ``cryptography``'s AES-GCM.

Wire format (byte-compatible with Tink's ``AesGcmHkdfStreamingKey``, HKDF-SHA256)::

    ciphertext = header || segment_0 || segment_1 || ... || segment_n-1
    header     = header_len (1 byte) || salt (key_size bytes) || nonce_prefix (7 bytes)
    key        = HKDF-SHA256(ikm=main key, salt=salt, info=associated data, len=key_size)
    nonce_i    = nonce_prefix || uint32_be(i) || (0x01 if i is the last segment else 0x00)
    segment_i  = AES-GCM(key, nonce_i, plaintext_i, aad="")  (ciphertext || 16-byte tag)

Every ciphertext segment is ``segment_size`` bytes except the first, which is shorter by the
header length, and the last, which may be shorter. The last-segment flag in the nonce makes
truncation at a segment boundary fail; the segment counter makes reordering fail; binding the
associated data through HKDF makes moving a blob to another context fail.
"""

from __future__ import annotations

import io
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import IntegrityError

TAG_SIZE = 16
NONCE_PREFIX_SIZE = 7
MAX_SEGMENTS = 2**32
# Segment buffers in flight per stage: enough to keep the helper threads busy.
PIPELINE_DEPTH = 4

PlaintextObserver = Callable[[memoryview], object]


class Readable(Protocol):
    """A source of bytes read into caller buffers (files, BytesIO, raw streams)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...

    def read(self, size: int = -1, /) -> bytes | None: ...


class Writable(Protocol):
    """A sink of bytes."""

    def write(self, data: memoryview, /) -> object: ...


@dataclass(frozen=True)
class StreamingParams:
    """Parameters of one AES-GCM-HKDF streaming key (Tink's ``AesGcmHkdfStreamingParams``)."""

    segment_size: int = 1 << 20
    key_size: int = 32

    def __post_init__(self) -> None:
        if self.key_size not in (16, 32):
            raise ValueError("key_size must be 16 or 32")
        if self.segment_size <= self.header_size + TAG_SIZE or self.segment_size >= 2**31:
            raise ValueError("segment_size out of range")

    @property
    def header_size(self) -> int:
        return 1 + self.key_size + NONCE_PREFIX_SIZE

    @property
    def first_plaintext_size(self) -> int:
        return self.segment_size - self.header_size - TAG_SIZE

    @property
    def plaintext_size(self) -> int:
        return self.segment_size - TAG_SIZE

    def ciphertext_size(self, plaintext_size: int) -> int:
        """Exact size of the ciphertext of a *plaintext_size*-byte message."""
        if plaintext_size <= self.first_plaintext_size:
            return self.header_size + plaintext_size + TAG_SIZE
        rest = plaintext_size - self.first_plaintext_size
        segments = 1 + -(-rest // self.plaintext_size)
        return self.header_size + plaintext_size + segments * TAG_SIZE


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= MAX_SEGMENTS:
        raise ValueError("too many segments for one stream")
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


def _derive_cipher(main_key: bytes, salt: bytes, associated_data: bytes, size: int) -> AESGCM:
    if len(main_key) < size:
        raise ValueError("main key shorter than the derived key size")
    derived = HKDF(algorithm=SHA256(), length=size, salt=salt, info=associated_data).derive(
        main_key
    )
    return AESGCM(derived)


class SegmentEncrypter:
    """Encrypts one stream segment by segment; holds the random salt and nonce prefix."""

    def __init__(self, main_key: bytes, associated_data: bytes, params: StreamingParams) -> None:
        self.params = params
        salt = os.urandom(params.key_size)
        self._prefix = os.urandom(NONCE_PREFIX_SIZE)
        self._cipher = _derive_cipher(main_key, salt, associated_data, params.key_size)
        self.header = bytes([params.header_size]) + salt + self._prefix

    def __repr__(self) -> str:
        return "SegmentEncrypter(***)"

    def encrypt_into(self, index: int, plaintext: memoryview, last: bool, out: bytearray) -> int:
        """Encrypt segment *index* into *out*; returns the ciphertext length."""
        size = len(plaintext) + TAG_SIZE
        self._cipher.encrypt_into(
            _nonce(self._prefix, index, last), plaintext, None, memoryview(out)[:size]
        )
        return size


class SegmentDecrypter:
    """Decrypts the segments of one stream given its header."""

    def __init__(
        self, main_key: bytes, associated_data: bytes, header: bytes, params: StreamingParams
    ) -> None:
        if len(header) != params.header_size or header[0] != params.header_size:
            raise IntegrityError("sealed stream header is malformed")
        self.params = params
        salt = header[1 : 1 + params.key_size]
        self._prefix = header[1 + params.key_size :]
        self._cipher = _derive_cipher(main_key, salt, associated_data, params.key_size)

    def __repr__(self) -> str:
        return "SegmentDecrypter(***)"

    def decrypt_into(self, index: int, ciphertext: memoryview, last: bool, out: bytearray) -> int:
        """Authenticate and decrypt segment *index* into *out*; returns the plaintext length."""
        if len(ciphertext) < TAG_SIZE:
            raise IntegrityError(f"sealed stream is truncated in segment {index}")
        size = len(ciphertext) - TAG_SIZE
        try:
            self._cipher.decrypt_into(
                _nonce(self._prefix, index, last), ciphertext, None, memoryview(out)[:size]
            )
        except InvalidTag:
            where = "last segment" if last else f"segment {index}"
            raise IntegrityError(
                f"sealed stream failed authentication in {where} "
                "(tampered, truncated, extended or wrong key)"
            ) from None
        return size


def read_full(source: Readable, buffer: memoryview) -> int:
    """Fill *buffer* from *source* unless EOF comes first; returns the bytes read."""
    filled = 0
    while filled < len(buffer):
        got = source.readinto(buffer[filled:])
        if not got:
            break
        filled += got
    return filled


class _BufferPool:
    """A fixed set of equal buffers; taking one blocks until a consumer gives one back."""

    def __init__(self, count: int, size: int) -> None:
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(bytearray(size))

    def take(self) -> bytearray:
        return self._free.get()

    def give(self, buffer: bytearray) -> None:
        self._free.put(buffer)


class _Worker:
    """Applies one function to buffers in submission order on its own thread.

    Hashing and file writes release the GIL, so running them beside the cipher uses both
    cores and overlaps disk writes with computation. The first error is re-raised in the
    producer at the next ``submit`` or at ``close``.
    """

    def __init__(self, function: Callable[[memoryview], object], name: str) -> None:
        self._function = function
        self._queue: queue.SimpleQueue[tuple[memoryview, Callable[[], None]] | None] = (
            queue.SimpleQueue()
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            view, release = item
            try:
                if self._error is None:
                    self._function(view)
            except BaseException as error:  # re-raised in the producer thread
                self._error = error
            finally:
                release()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, view: memoryview, release: Callable[[], None]) -> None:
        self._raise_pending()
        self._queue.put((view, release))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_pending()


class _Stage:
    """A buffer pool plus the workers that must all finish with a buffer before reuse."""

    def __init__(self, size: int, functions: list[Callable[[memoryview], object]]) -> None:
        self._size = size
        self._pool = _BufferPool(PIPELINE_DEPTH, size)
        self._workers = [_Worker(f, "sealml-stream") for f in functions]

    def take(self) -> bytearray:
        return self._pool.take()

    def submit(self, buffer: bytearray, length: int) -> None:
        """Hand *buffer* to every worker; it returns to the pool when the last one is done
        (unless it is not the pool's size: a caller's own buffer is only used)."""
        if not self._workers:
            self._recycle(buffer)
            return
        remaining = [len(self._workers)]
        lock = threading.Lock()

        def release() -> None:
            with lock:
                remaining[0] -= 1
                done = remaining[0] == 0
            if done:
                self._recycle(buffer)

        view = memoryview(buffer)[:length]
        for worker in self._workers:
            worker.submit(view, release)

    def _recycle(self, buffer: bytearray) -> None:
        if len(buffer) == self._size:
            self._pool.give(buffer)

    def close(self) -> None:
        errors: list[BaseException] = []
        for worker in self._workers:
            try:
                worker.close()
            except BaseException as error:
                errors.append(error)
        if errors:
            raise errors[0]


def encrypt_stream(
    main_key: bytes,
    associated_data: bytes,
    source: Readable,
    sink: Writable,
    params: StreamingParams,
    observer: PlaintextObserver | None = None,
) -> int:
    """Encrypt *source* to *sink* in one pass; *observer* sees every plaintext byte in order.

    Reading and encryption run on the calling thread, the observer (a hash) and the writes
    to *sink* on helper threads. Memory use is a fixed number of segment buffers whatever
    the input size. Returns the plaintext size.
    """
    encrypter = SegmentEncrypter(main_key, associated_data, params)
    sink.write(memoryview(encrypter.header))
    small = _one_segment(source, params.first_plaintext_size)
    if small is not None:
        # One segment from memory: the helper threads and buffer pools (megabytes to
        # allocate) would cost more than the work itself.
        if observer is not None:
            observer(memoryview(small))
        out = bytearray(params.segment_size)
        written = encrypter.encrypt_into(0, memoryview(small), True, out)
        sink.write(memoryview(out)[:written])
        return len(small)
    plain = _Stage(params.plaintext_size, [observer] if observer else [])
    cipher = _Stage(params.segment_size, [sink.write])
    try:
        current = plain.take()
        length = read_full(source, memoryview(current)[: params.first_plaintext_size])
        index = 0
        total = 0
        while True:
            following = plain.take()
            next_length = read_full(source, memoryview(following))
            last = next_length == 0
            out = cipher.take()
            written = encrypter.encrypt_into(index, memoryview(current)[:length], last, out)
            plain.submit(current, length)
            cipher.submit(out, written)
            total += length
            if last:
                return total
            current, length, index = following, next_length, index + 1
    finally:
        plain.close()
        cipher.close()


def _one_segment(source: Readable, limit: int) -> bytes | None:
    """The rest of an in-memory source when it fits in the first segment, else None."""
    if not isinstance(source, io.BytesIO):
        return None
    start = source.tell()
    with source.getbuffer() as whole:
        if whole.nbytes - start > limit:
            return None
        small = bytes(whole[start:])
    source.seek(0, io.SEEK_END)
    return small


def iter_decrypted(
    main_key: bytes,
    associated_data: bytes,
    source: Readable,
    params: StreamingParams,
    next_buffer: Callable[[int], bytearray] | None = None,
) -> Iterator[memoryview]:
    """Yield the authenticated plaintext segments of *source*, in order.

    Each segment is decrypted into ``next_buffer(size)``, a buffer of at least *size*
    bytes (by default one reused buffer, so a yielded view is valid only until the next is
    requested). A segment is yielded only after its tag verified; a stream that ends early
    raises IntegrityError.
    """
    header = source.read(params.header_size) or b""
    if len(header) < params.header_size:
        raise IntegrityError("sealed stream is truncated in its header")
    decrypter = SegmentDecrypter(main_key, associated_data, header, params)
    if next_buffer is None:
        shared = bytearray(0)

        def next_buffer(size: int) -> bytearray:
            nonlocal shared
            if len(shared) < size:
                shared = bytearray(params.plaintext_size if shared else size)
            return shared

    # Most sealed blobs are one small segment: read it at its own size and allocate the
    # two segment-sized read buffers only when a second segment follows.
    first = _read_up_to(source, params.segment_size - params.header_size)
    following = _read_up_to(source, params.segment_size)
    out = next_buffer(max(len(first) - TAG_SIZE, 0))
    size = decrypter.decrypt_into(0, memoryview(first), not following, out)
    yield memoryview(out)[:size]
    if not following:
        return
    buffers = (bytearray(params.segment_size), bytearray(params.segment_size))
    current = 0
    buffers[0][: len(following)] = following
    length = len(following)
    index = 1
    while True:
        following_index = 1 - current
        next_length = read_full(source, memoryview(buffers[following_index]))
        last = next_length == 0
        out = next_buffer(max(length - TAG_SIZE, 0))
        size = decrypter.decrypt_into(index, memoryview(buffers[current])[:length], last, out)
        yield memoryview(out)[:size]
        if last:
            return
        current, length, index = following_index, next_length, index + 1


def _read_up_to(source: Readable, size: int) -> bytes:
    """Up to *size* bytes of *source*, fewer only at EOF."""
    chunk = source.read(size) or b""
    if len(chunk) == size or not chunk:
        return chunk
    parts = [chunk]
    missing = size - len(chunk)
    while missing and (more := source.read(missing)):
        parts.append(more)
        missing -= len(more)
    return b"".join(parts)


def decrypt_stream(
    main_key: bytes,
    associated_data: bytes,
    source: Readable,
    sink: Writable | None,
    params: StreamingParams,
    observer: PlaintextObserver | None = None,
) -> int:
    """Decrypt *source* to *sink* (or only authenticate it when *sink* is None).

    *observer* sees every authenticated plaintext byte in order, as does *sink*; past the
    first segment both run on helper threads. Returns the plaintext size.
    """
    functions: list[Callable[[memoryview], object]] = []
    if observer is not None:
        functions.append(observer)
    if sink is not None:
        functions.append(sink.write)
    # The helper threads start only once a second segment exists: for a one-segment
    # stream, starting and joining them costs more than the work itself.
    first = bytearray(0)
    first_length: int | None = None
    plain: _Stage | None = None

    def next_buffer(size: int) -> bytearray:
        nonlocal plain, first
        if first_length is None:
            first = bytearray(size)
            return first
        if plain is None:
            plain = _Stage(params.plaintext_size, functions)
            plain.submit(first, first_length)
        return plain.take()

    total = 0
    try:
        for segment in iter_decrypted(main_key, associated_data, source, params, next_buffer):
            if first_length is None:
                first_length = len(segment)
            else:
                assert plain is not None
                plain.submit(segment.obj, len(segment))  # type: ignore[arg-type]
            total += len(segment)
        if plain is None and first_length is not None:
            view = memoryview(first)[:first_length]
            for function in functions:
                function(view)
    finally:
        if plain is not None:
            plain.close()
    return total


def encrypt_bytes(
    main_key: bytes, associated_data: bytes, plaintext: bytes, params: StreamingParams
) -> bytes:
    """The streaming ciphertext of an in-memory message."""
    import io

    sink = io.BytesIO()
    encrypt_stream(main_key, associated_data, io.BytesIO(plaintext), sink, params)
    return sink.getvalue()


def decrypt_bytes(
    main_key: bytes, associated_data: bytes, ciphertext: bytes, params: StreamingParams
) -> bytes:
    """The plaintext of an in-memory streaming ciphertext (IntegrityError if it fails)."""
    import io

    sink = io.BytesIO()
    decrypt_stream(main_key, associated_data, io.BytesIO(ciphertext), sink, params)
    return sink.getvalue()


class EncryptingWriter(io.RawIOBase):
    """A writable stream whose bytes reach *sink* encrypted, in the same format as
    :func:`encrypt_stream`: for producers that write (``tarfile``, ``json.dump``) rather
    than offer a source to read. :meth:`close` writes the last segment."""

    def __init__(
        self, main_key: bytes, associated_data: bytes, sink: Writable, params: StreamingParams
    ) -> None:
        super().__init__()
        self._encrypter = SegmentEncrypter(main_key, associated_data, params)
        self._sink = sink
        self._params = params
        self._pending = bytearray()
        self._limit = params.first_plaintext_size
        self._index = 0
        self._out = bytearray(params.segment_size)
        sink.write(memoryview(self._encrypter.header))

    def writable(self) -> bool:
        return True

    def write(self, data: Any, /) -> int:
        view = memoryview(data).cast("B")
        self._pending += view
        # A full segment is written only once more data follows: the last one is flagged.
        while len(self._pending) > self._limit:
            self._emit(memoryview(self._pending)[: self._limit], last=False)
            del self._pending[: self._limit]
            self._limit = self._params.plaintext_size
        return len(view)

    def _emit(self, plaintext: memoryview, last: bool) -> None:
        size = self._encrypter.encrypt_into(self._index, plaintext, last, self._out)
        self._sink.write(memoryview(self._out)[:size])
        self._index += 1

    def close(self) -> None:
        if not self.closed:
            self._emit(memoryview(self._pending), last=True)
            self._pending.clear()
        super().close()


class DecryptingReader(io.RawIOBase):
    """A readable view of the plaintext of a stream sealed by :func:`encrypt_stream` or
    :class:`EncryptingWriter`: every byte returned comes from a segment whose tag
    verified, and a stream cut short raises IntegrityError from ``read``. Subclasses see
    each segment (:meth:`_observe`) and the end (:meth:`_at_end`)."""

    def __init__(
        self, main_key: bytes, associated_data: bytes, source: Readable, params: StreamingParams
    ) -> None:
        super().__init__()
        self._segments = iter_decrypted(main_key, associated_data, source, params)
        self._pending = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any, /) -> int:
        target = memoryview(buffer).cast("B")
        while not self._pending and not self._done:
            segment = next(self._segments, None)
            if segment is None:
                self._done = True
                self._at_end()
                break
            self._observe(segment)
            self._pending = segment
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _observe(self, segment: memoryview) -> None:
        """Called with each authenticated segment, in order."""

    def _at_end(self) -> None:
        """Called once, after the last segment authenticated."""
