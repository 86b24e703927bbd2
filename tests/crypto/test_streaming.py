"""The streaming AEAD: round trips, Tink byte-compatibility both ways, and tamper detection."""

from __future__ import annotations

import io
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealml.crypto.streaming import StreamingParams, decrypt_stream, encrypt_stream
from sealml.errors import IntegrityError

SMALL = StreamingParams(segment_size=256)
KEY = bytes(range(32))
AAD = b"artifact-1"


def seal(plaintext: bytes, params: StreamingParams = SMALL, aad: bytes = AAD) -> bytes:
    sink = io.BytesIO()
    encrypt_stream(KEY, aad, io.BytesIO(plaintext), sink, params)
    return sink.getvalue()


def unseal(ciphertext: bytes, params: StreamingParams = SMALL, aad: bytes = AAD) -> bytes:
    sink = io.BytesIO()
    decrypt_stream(KEY, aad, io.BytesIO(ciphertext), sink, params)
    return sink.getvalue()


def boundary_sizes(params: StreamingParams) -> list[int]:
    first, rest = params.first_plaintext_size, params.plaintext_size
    return [0, 1, first - 1, first, first + 1, first + rest, first + 2 * rest, first + 2 * rest + 1]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000) | st.sampled_from(boundary_sizes(SMALL)).map(os.urandom))
def test_round_trip_random_sizes(plaintext: bytes) -> None:
    ciphertext = seal(plaintext)
    assert len(ciphertext) == SMALL.ciphertext_size(len(plaintext))
    assert unseal(ciphertext) == plaintext


@pytest.mark.parametrize("size", boundary_sizes(SMALL))
def test_exact_segment_boundaries(size: int) -> None:
    plaintext = os.urandom(size)
    assert unseal(seal(plaintext)) == plaintext


def test_observer_sees_every_plaintext_byte_in_order() -> None:
    plaintext = os.urandom(5000)
    seen = bytearray()
    encrypt_stream(KEY, AAD, io.BytesIO(plaintext), io.BytesIO(), SMALL, seen.extend)
    assert bytes(seen) == plaintext


@pytest.mark.parametrize("size", boundary_sizes(SMALL))
def test_decryption_observer_and_sink_see_every_byte_in_order(size: int) -> None:
    """A one-segment stream is decrypted on the calling thread, longer ones with helper
    threads; both hand the observer and the sink the same authenticated bytes."""
    plaintext = os.urandom(size)
    seen, sink, threads = bytearray(), io.BytesIO(), set()

    def observe(view: memoryview) -> None:
        threads.add(threading.current_thread())
        seen.extend(view)

    assert decrypt_stream(KEY, AAD, io.BytesIO(seal(plaintext)), sink, SMALL, observe) == size
    assert bytes(seen) == sink.getvalue() == plaintext
    one_segment = size <= SMALL.first_plaintext_size
    assert (threads == {threading.current_thread()}) is one_segment


def test_encryption_is_randomised() -> None:
    assert seal(b"same") != seal(b"same")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda c: c[:-1], id="truncate-one-byte"),
        pytest.param(lambda c: c[: SMALL.segment_size], id="truncate-at-segment-boundary"),
        pytest.param(lambda c: c + b"\x00", id="append-byte"),
        pytest.param(lambda c: c + c[-300:], id="append-segment"),
        pytest.param(lambda c: c[:5] + bytes([c[5] ^ 1]) + c[6:], id="header-salt"),
        pytest.param(lambda c: bytes([c[0] ^ 1]) + c[1:], id="header-length"),
        pytest.param(lambda c: c[:256] + c[512:768] + c[256:512] + c[768:], id="reorder-segments"),
        pytest.param(lambda c: c[:40], id="header-only"),
        pytest.param(lambda c: b"", id="empty"),
    ],
)
def test_tampered_ciphertext_is_refused(mutate: object) -> None:
    ciphertext = seal(os.urandom(1000))
    with pytest.raises(IntegrityError):
        unseal(mutate(ciphertext))  # type: ignore[operator]


def test_wrong_associated_data_is_refused() -> None:
    with pytest.raises(IntegrityError):
        unseal(seal(b"data"), aad=b"artifact-2")


def test_failed_decryption_writes_nothing_after_the_bad_segment() -> None:
    ciphertext = bytearray(seal(os.urandom(2000)))
    ciphertext[600] ^= 1  # inside the third segment
    sink = io.BytesIO()
    with pytest.raises(IntegrityError):
        decrypt_stream(KEY, AAD, io.BytesIO(bytes(ciphertext)), sink, SMALL)
    assert len(sink.getvalue()) < 600


# -- Tink interoperability ---------------------------------------------------------------

tink = pytest.importorskip("tink", reason="tink is in the test extra; CI installs it")


def tink_primitive(key: bytes, params: StreamingParams) -> object:
    from tink import secret_key_access, streaming_aead
    from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

    streaming_aead.register()
    key_proto = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(version=0, key_value=key)
    key_proto.params.ciphertext_segment_size = params.segment_size
    key_proto.params.derived_key_size = params.key_size
    key_proto.params.hkdf_hash_type = common_pb2.SHA256
    keyset = tink_pb2.Keyset(primary_key_id=7)
    entry = keyset.key.add()
    entry.key_data.type_url = "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey"
    entry.key_data.value = key_proto.SerializeToString()
    entry.key_data.key_material_type = tink_pb2.KeyData.SYMMETRIC
    entry.status = tink_pb2.ENABLED
    entry.key_id = 7
    entry.output_prefix_type = tink_pb2.RAW
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    return handle.primitive(streaming_aead.StreamingAead)


class _KeepOnClose(io.BytesIO):
    """Tink closes the stream it writes to; keep the bytes."""

    kept = b""

    def close(self) -> None:
        self.kept = self.getvalue()
        super().close()


INTEROP_PARAMS = [StreamingParams(segment_size=4096), StreamingParams()]


@pytest.mark.parametrize("params", INTEROP_PARAMS, ids=["4KiB", "1MiB"])
@pytest.mark.parametrize("extra", [-1, 0, 1, None])
def test_tink_decrypts_what_sealml_wrote(params: StreamingParams, extra: int | None) -> None:
    size = 0 if extra is None else params.first_plaintext_size + params.plaintext_size + extra
    plaintext = os.urandom(size)
    primitive = tink_primitive(KEY, params)
    ciphertext = seal(plaintext, params)
    with primitive.new_decrypting_stream(io.BytesIO(ciphertext), AAD) as stream:  # type: ignore[attr-defined]
        assert stream.read() == plaintext


@pytest.mark.parametrize("params", INTEROP_PARAMS, ids=["4KiB", "1MiB"])
@pytest.mark.parametrize("extra", [-1, 0, 1, None])
def test_sealml_decrypts_what_tink_wrote(params: StreamingParams, extra: int | None) -> None:
    size = 0 if extra is None else params.first_plaintext_size + 2 * params.plaintext_size + extra
    plaintext = os.urandom(size)
    primitive = tink_primitive(KEY, params)
    sink = _KeepOnClose()
    with primitive.new_encrypting_stream(sink, AAD) as stream:  # type: ignore[attr-defined]
        stream.write(plaintext)
    assert unseal(sink.kept, params) == plaintext


class _Reader:
    """A source that is not a BytesIO, so encryption takes the threaded path."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readinto(self, buffer: memoryview) -> int:
        return self._data.readinto(buffer)


@pytest.mark.parametrize("size", boundary_sizes(SMALL)[:5])
def test_one_segment_from_memory_seals_like_a_stream(size: int) -> None:
    """In-memory sources that fit one segment are encrypted without helper threads; the
    result is the same format (same size, same plaintext, same bytes observed)."""
    plaintext = os.urandom(size)
    for source in (io.BytesIO(plaintext), _Reader(plaintext)):
        sink, seen = io.BytesIO(), bytearray()
        assert encrypt_stream(KEY, AAD, source, sink, SMALL, seen.extend) == size
        assert bytes(seen) == plaintext
        assert len(sink.getvalue()) == SMALL.ciphertext_size(size)
        assert unseal(sink.getvalue()) == plaintext
    partly_read = io.BytesIO(b"skip" + plaintext)
    partly_read.seek(4)
    assert unseal(seal_from(partly_read)) == plaintext


def seal_from(source: io.BytesIO) -> bytes:
    sink = io.BytesIO()
    encrypt_stream(KEY, AAD, source, sink, SMALL)
    return sink.getvalue()


@pytest.mark.parametrize("params", INTEROP_PARAMS, ids=["4KiB", "1MiB"])
def test_tink_decrypts_one_segment_sealed_from_memory(params: StreamingParams) -> None:
    plaintext = os.urandom(params.first_plaintext_size)
    with tink_primitive(KEY, params).new_decrypting_stream(  # type: ignore[attr-defined]
        io.BytesIO(seal(plaintext, params)), AAD
    ) as stream:
        assert stream.read() == plaintext


@pytest.mark.parametrize("size", boundary_sizes(SMALL))
def test_writer_and_reader_speak_the_stream_format(size: int) -> None:
    """EncryptingWriter writes what decrypt_stream reads, in pieces of any size;
    DecryptingReader reads what encrypt_stream wrote, and refuses a cut-short stream."""
    from sealml.crypto.streaming import DecryptingReader, EncryptingWriter

    plaintext = os.urandom(size)
    sink = io.BytesIO()
    writer = EncryptingWriter(KEY, AAD, sink, SMALL)
    for start in range(0, size, 97):
        assert writer.write(plaintext[start : start + 97]) == len(plaintext[start : start + 97])
    writer.close()
    assert len(sink.getvalue()) == SMALL.ciphertext_size(size)
    assert unseal(sink.getvalue()) == plaintext
    reader = DecryptingReader(KEY, AAD, io.BytesIO(seal(plaintext)), SMALL)
    assert reader.read(5) + reader.read() == plaintext
    cut = seal(plaintext)[: SMALL.header_size + SMALL.segment_size - SMALL.header_size]
    if size > SMALL.first_plaintext_size:
        with pytest.raises(IntegrityError):
            DecryptingReader(KEY, AAD, io.BytesIO(cut), SMALL).read()
