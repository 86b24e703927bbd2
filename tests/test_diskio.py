"""DurableAppender writes exactly what it was given, with and without O_DIRECT."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealml import diskio as durable
from sealml.diskio import DurableAppender


@pytest.fixture(params=["direct", "buffered"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "buffered":
        monkeypatch.delattr(os, "O_DIRECT", raising=False)
    return str(request.param)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(min_value=0, max_value=3 * (1 << 20)), max_size=6))
def test_appended_bytes_are_exactly_the_input(
    mode: str, tmp_path_factory: pytest.TempPathFactory, sizes: list[int]
) -> None:
    path = tmp_path_factory.mktemp("d") / "blob"
    chunks = [os.urandom(size) for size in sizes]
    appender = DurableAppender(path, 0o600)
    for chunk in chunks:
        assert appender.write(memoryview(chunk)) == len(chunk)
    appender.finish()
    appender.close()
    assert path.read_bytes() == b"".join(chunks)
    assert path.stat().st_mode & 0o777 == 0o600


def test_refuses_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        DurableAppender(path, 0o600)
    assert path.read_bytes() == b"keep"


def test_stage_is_flushed_in_aligned_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable, "_STAGE", 8192)
    path = tmp_path / "blob"
    data = os.urandom(8192 * 3 + 100)
    appender = DurableAppender(path, 0o600)
    appender.write(memoryview(data)[:5000])
    appender.write(memoryview(data)[5000:])
    appender.finish()
    appender.close()
    assert path.read_bytes() == data


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, (4 << 20) + 1, (13 << 20) + 777])
def test_direct_reader_returns_the_file(mode: str, tmp_path: Path, size: int) -> None:
    from sealml.diskio import DirectReader

    path = tmp_path / "blob"
    data = os.urandom(size)
    path.write_bytes(data)
    with DirectReader(path) as reader:
        assert reader.read(7) == data[:7]
        assert reader.read() == data[7:]
        assert reader.read(10) == b""


def test_direct_reader_can_be_closed_early(tmp_path: Path) -> None:
    from sealml.diskio import DirectReader

    path = tmp_path / "blob"
    path.write_bytes(os.urandom(20 << 20))
    reader = DirectReader(path)
    assert len(reader.read(100)) == 100
    reader.close()
    assert reader.closed


@pytest.mark.parametrize("size", [0, 4096, 200_000])
def test_small_files_are_read_through_the_page_cache_large_ones_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    from sealml.diskio import DirectReader, open_for_reading

    path = tmp_path / "blob"
    data = os.urandom(size)
    path.write_bytes(data)
    with open_for_reading(path) as reader:
        assert not isinstance(reader, DirectReader)
        assert reader.read() == data
    monkeypatch.setattr(durable, "DIRECT_READ_FROM", size)
    with open_for_reading(path) as reader:
        assert isinstance(reader, DirectReader)
        assert reader.read() == data
