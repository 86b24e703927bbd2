"""Bad tabular input gives one clear error: quoting, encodings, huge lines, bombs, formats."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from sealml.data.tables import Limits, detect_format, media_type_of, parse_table, read_source
from sealml.errors import UsageError


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b'a,b\n1,"unclosed\n2,3\n', "csv", "EOF inside string"),
        (b"a,b\n1,2,3,4\n", "csv", "Length of header"),
        (b"name\nJos\xe9\n", "csv", r"not valid utf-8 \(byte 8\)"),
        (b"", "csv", "holds no data"),
        (b'{"a": 1}\n{broken\n', "jsonl", "cannot be parsed as jsonl"),
        (b"PAR1 not really", "parquet", "not a readable Parquet file"),
        (b"\x1f\x8b\x08\x00garbage", "csv", "not valid gzip"),
    ],
    ids=[
        "broken-quoting",
        "extra-fields",
        "wrong-encoding",
        "empty",
        "bad-json",
        "bad-parquet",
        "bad-gzip",
    ],
)
def test_bad_input_is_one_clear_error(data: bytes, fmt: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        parse_table(data, fmt, "input")
    assert "\n" not in str(caught.value)


def test_declared_encoding_reads_latin1() -> None:
    frame = parse_table(b"name\nJos\xe9\n", "csv", "input", encoding="latin-1")
    assert frame["name"].tolist() == ["José"]


def test_a_2_gb_single_line_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as handle:
        handle.write(b"a,b\n")
        handle.truncate(2 << 30)  # sparse: 2 GB with no line end after the header
    with pytest.raises(UsageError, match="longer than 67108864 bytes"):
        read_source(path, Limits())


def test_size_limit_and_gzip_bomb(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"a\n" + b"1\n" * 1000)
    with pytest.raises(UsageError, match="over the 100-byte limit"):
        read_source(path, Limits(max_bytes=100))
    bomb = gzip.compress(b"a\n" + b"0\n" * 5_000_000)
    with pytest.raises(UsageError, match="expands beyond"):
        parse_table(bomb, "csv", "bomb.csv.gz", limits=Limits(max_bytes=1 << 20))


def test_missing_and_folder_sources(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_source(tmp_path / "nope.csv", Limits())
    with pytest.raises(UsageError, match="folder"):
        read_source(tmp_path, Limits())


def test_formats_and_real_data() -> None:
    assert detect_format("x.csv.gz") == "csv" and detect_format("x.parquet") == "parquet"
    with pytest.raises(UsageError, match="cannot tell"):
        detect_format("x.xlsx")
    assert detect_format("credit", "text/csv") == "csv"  # a name without a suffix
    assert detect_format("rows", "application/x-ndjson") == "jsonl"
    with pytest.raises(UsageError, match="cannot tell"):
        detect_format("credit", "application/octet-stream")
    assert media_type_of("a.CSV") == "text/csv" and media_type_of("a.csv.gz") == "application/gzip"
    assert media_type_of("a.bin") is None and media_type_of("a.bin.gz") is None
    data = (
        Path(__file__).resolve().parents[3] / "shared" / "data" / "adult_train.csv.gz"
    ).read_bytes()
    frame = parse_table(data, "csv", "adult_train.csv.gz")
    assert frame.shape == (32561, 15)
