"""The scanner flags every malicious technique in the corpus and no benign model file."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import zipfile
import zlib
from pathlib import Path

import pytest
import zstandard

from sealml.models.scanner import MAX_DEPTH, MAX_ENTRIES, scan_bytes, scan_path

from . import corpus

MALICIOUS = corpus.malicious()
BENIGN = corpus.benign()


def test_corpus_is_large_enough() -> None:
    assert len(MALICIOUS) >= 30 and len(BENIGN) >= 30


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_every_malicious_file_is_flagged(name: str) -> None:
    result = scan_bytes(MALICIOUS[name], name)
    assert result.verdict != "safe", f"{name} passed as safe"
    assert result.findings


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_no_benign_file_is_flagged(name: str) -> None:
    result = scan_bytes(BENIGN[name], name)
    assert result.verdict == "safe", [f.detail for f in result.findings]


def test_dangerous_callables_are_named_and_critical() -> None:
    result = scan_bytes(MALICIOUS["memo_trick.pkl"], "memo_trick.pkl")
    assert result.verdict == "unsafe"
    assert any("os.system" in f.detail for f in result.findings)
    computed = scan_bytes(MALICIOUS["computed_name.pkl"], "x.pkl")
    assert {f.kind for f in computed.findings} >= {"unresolvable_global"}


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps([1, 2, 3])[:-3],  # truncated
        b"\x80\x04\x95\xff\xff\xff",  # frame past the end
        b"\x80\x05\xfe\xfe",  # unknown opcode
        b"PK\x03\x04 not a zip",
        b"\x93NUMPY\x01",
    ],
    ids=["truncated", "bad-frame", "bad-opcode", "bad-zip", "bad-npy"],
)
def test_malformed_input_is_a_finding_not_a_crash(data: bytes) -> None:
    result = scan_bytes(data, "broken.pkl")
    assert result.verdict != "safe"
    assert all(f.kind in ("malformed", "limit") for f in result.findings)


def _zip_with_unsupported_version() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.pkl", pickle.dumps([1, 2]))
    data = bytearray(buffer.getvalue())
    central = data.index(b"PK\x01\x02")
    data[central + 6 : central + 8] = (89).to_bytes(2, "little")  # "needs zip 8.9"
    return bytes(data)


def _zip_with_an_empty_name() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo(""), pickle.dumps([1, 2]))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [_zip_with_unsupported_version(), _zip_with_an_empty_name()],
    ids=["zip-version", "empty-entry-name"],
)
def test_odd_archives_are_findings_or_scanned_never_crashes(data: bytes) -> None:
    result = scan_bytes(data, "odd.zip")  # found by fuzzing: both used to raise
    assert result.verdict in ("safe", "unknown")
    assert all(f.kind == "malformed" for f in result.findings)


def test_mutated_corpus_files_never_crash_the_scanner() -> None:
    """Random byte changes, cuts and insertions (seeded) in every corpus file: always a
    verdict, never an exception."""
    import random

    rng = random.Random(5)
    for name, original in sorted({**MALICIOUS, **BENIGN}.items()):
        for _ in range(25):
            data = bytearray(original)
            for _ in range(rng.randint(1, 4)):
                if not data:
                    break
                at, roll = rng.randrange(len(data)), rng.random()
                if roll < 0.5:
                    data[at] = rng.randrange(256)
                elif roll < 0.75:
                    del data[at : at + rng.randint(1, 16)]
                else:
                    data[at:at] = rng.randbytes(rng.randint(1, 8))
            assert scan_bytes(bytes(data), name).verdict in ("safe", "unknown", "unsafe")


def test_archive_bombs_and_deep_nesting_are_bounded() -> None:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * (50 << 20))
    assert {f.kind for f in scan_bytes(sink.getvalue(), "bomb.zip").findings} == {"bomb"}
    nested = pickle.dumps([1])
    for level in range(MAX_DEPTH + 3):
        nested = corpus._zip({f"level{level}.zip": nested})
    assert any(f.kind == "nesting" for f in scan_bytes(nested, "deep.zip").findings)


COMPRESSORS = {
    "zlib": zlib.compress,
    "gzip": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_every_compression_joblib_reads_is_inflated_within_bounds(kind: str) -> None:
    compress = COMPRESSORS[kind]
    evil = scan_bytes(compress(HEADLESS), "weights")
    assert evil.verdict == "unsafe" and evil.findings[0].location.startswith(f"weights!{kind}")
    bomb = scan_bytes(compress(b"\0" * (300 << 20)), "zeros.joblib")
    assert {f.kind for f in bomb.findings} == {"bomb"}
    cut = compress(pickle.dumps(os.system, protocol=2))
    truncated = scan_bytes(cut[: len(cut) * 2 // 3], "cut.joblib")
    assert truncated.verdict != "safe"


@pytest.mark.parametrize(
    "head", [b"BZ", b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x5d\x00", b"\x78\x9c", b"\x28\xb5\x2f\xfd"]
)
def test_data_that_only_starts_like_compression_is_walked_as_a_pickle(head: bytes) -> None:
    assert scan_bytes(head + b"ranch office notes, not compressed\n", "notes").unrecognised == 1


def test_lz4_which_joblib_may_inflate_is_not_called_safe() -> None:
    """joblib reads LZ4 when the lz4 package is installed; sealml does not inflate it, so
    the verdict cannot be safe."""
    result = scan_bytes(b"\x04\x22\x4d\x18" + bytes(range(64)), "model.joblib")
    assert result.verdict == "unknown"
    assert [f.kind for f in result.findings] == ["unchecked"]


def test_tar_archives_are_bounded_and_damage_is_a_finding() -> None:
    many = corpus._tar({f"part{index}": b"x" for index in range(MAX_ENTRIES + 1)})
    assert {f.kind for f in scan_bytes(many, "parts.tar").findings} == {"bomb"}
    whole = corpus._tar({"model/weights": pickle.dumps(os.system, protocol=2)})
    cut = scan_bytes(whole[:700], "cut.tar")  # the member's data cut off
    assert cut.verdict != "safe" and any(f.kind == "malformed" for f in cut.findings)


def test_folder_scan(tmp_path: Path) -> None:
    corpus.write(tmp_path / "good", BENIGN)
    corpus.write(tmp_path / "bad", {"x.pkl": MALICIOUS["eval.pkl"]})
    assert scan_path(tmp_path / "good").verdict == "safe"
    folder = scan_path(tmp_path)
    assert folder.verdict == "unsafe" and folder.files == len(BENIGN) + 1


# A protocol 0 pickle may open with any opcode: NONE and POP first, then os.system.
HEADLESS = b"N0cos\nsystem\n(S'echo pwned'\ntR."


@pytest.mark.parametrize("name", ["model", "weights.model", "checkpoint.data"])
def test_a_pickle_in_a_file_of_no_known_name_or_head_is_still_walked(name: str) -> None:
    """Unpickling reads any file: a name or first byte the scanner does not know is no
    reason to call it safe, on disk or inside an archive."""
    assert scan_bytes(HEADLESS, name).verdict == "unsafe"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(f"export/{name}", HEADLESS)
    assert scan_bytes(archive.getvalue(), "export.zip").verdict == "unsafe"
    cut = scan_bytes(HEADLESS[:-6], name)  # malformed after the import: still imported
    assert cut.verdict == "unsafe" and "os.system" in cut.globals


@pytest.mark.parametrize(
    "data",
    [
        b"checking_status,duration,credit_amount\nA11,6,1169\n",  # GLOBAL of a non-name
        b"import numpy as np\nimport pytest\n\n\ndef test_x():\n    pass\n",  # INST
        b"# README\n\nThis model predicts income. Path: C:\\models\\x\n",
        b'{"architectures": ["Forest"], "n_estimators": 100}',
        bytes(range(256)) * 4,
    ],
    ids=["csv", "python", "text", "json", "binary"],
)
def test_files_of_no_model_format_are_counted_not_flagged(data: bytes) -> None:
    """Data that unpickling would reject before importing anything is no finding; the
    report counts it as of no model format."""
    result = scan_bytes(data, "notes")
    assert result.verdict == "safe", [f.detail for f in result.findings]
    assert result.unrecognised == 1 and not result.globals


def test_a_plain_data_pickle_without_a_suffix_is_a_pickle(tmp_path: Path) -> None:
    (tmp_path / "state").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=0))
    result = scan_path(tmp_path / "state")
    assert result.verdict == "safe" and result.unrecognised == 0


def test_symbolic_links_are_scanned_or_reported(tmp_path: Path) -> None:
    """A link to a file is scanned as its target (what a loader would read); a link to a
    folder, or to nothing, is a finding rather than silently skipped."""
    outside = tmp_path / "outside"
    corpus.write(outside, {"payload.pkl": MALICIOUS["eval.pkl"]})
    model = tmp_path / "model"
    corpus.write(model, {"forest.pkl": BENIGN[sorted(BENIGN)[0]]})
    assert scan_path(model).verdict == "safe"
    (model / "weights.pkl").symlink_to(outside / "payload.pkl")
    assert scan_path(model).verdict == "unsafe"
    (model / "weights.pkl").unlink()
    (model / "shards").symlink_to(outside, target_is_directory=True)
    (model / "dangling.pkl").symlink_to(tmp_path / "nothing.pkl")
    result = scan_path(model)
    assert result.verdict == "unknown"
    assert sorted(f.location for f in result.findings if f.kind == "symlink") == [
        "model/dangling.pkl",
        "model/shards",
    ]


def test_skops_files_are_judged_by_the_types_their_schema_names() -> None:
    import os

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import FunctionTransformer

    from sealml.models.formats import dump_skops

    assert scan_bytes(dump_skops(LogisticRegression()), "model.skops").verdict == "safe"
    evil = dump_skops(FunctionTransformer(func=os.system))
    result = scan_bytes(evil, "model.skops")
    assert result.verdict == "unsafe"
    assert any("system" in f.detail and f.kind == "dangerous_global" for f in result.findings)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as outer:  # the same file inside another archive
        outer.writestr("models/evil.skops", evil)
    assert scan_bytes(buffer.getvalue(), "bundle.zip").verdict == "unsafe"


def test_joblib_object_arrays_are_scanned_as_their_own_pickle() -> None:
    result = scan_bytes(MALICIOUS["joblib_object_array.joblib"], "model.joblib")
    assert result.verdict == "unsafe"
    assert any(":objects" in f.location and "system" in f.detail for f in result.findings)


@pytest.mark.parametrize("name", ["numpy_memmap.pkl", "pandas_reexport.pkl"])
def test_file_touching_classes_in_allowed_packages_are_not_safe(name: str) -> None:
    assert scan_bytes(MALICIOUS[name], name).verdict != "safe"


def _machine_only(monkeypatch: pytest.MonkeyPatch, data: bytes) -> tuple[int, set[str]]:
    """Where the first pickle in *data* ends and what it imports, by the full machine."""
    from sealml.models.scanner import ScanResult, _Scan

    result = ScanResult("x.pkl")
    with monkeypatch.context() as patched:
        patched.setattr("sealml.models.fastpath.imports", lambda *args: None)
        end = _Scan(result).pickle_stream(data, "x.pkl")
    return end, result.globals


def _mutations(data: bytes) -> list[bytes]:
    """Truncations and single-byte changes at spread-out offsets (deterministic)."""
    cuts = [data[: len(data) * k // 7] for k in range(1, 7)]
    flips = []
    for k in range(1, 12):
        at = len(data) * k // 12
        for value in (0x94, 0x68, 0x8C, 0x93, 0xFF):  # MEMOIZE, BINGET, text, STACK_GLOBAL
            flips.append(data[:at] + bytes([value]) + data[at + 1 :])
    return cuts + flips


@pytest.mark.parametrize(
    "name", sorted(n for n, d in {**MALICIOUS, **BENIGN}.items() if d[:1] == b"\x80")
)
def test_quick_pass_agrees_with_the_stack_machine(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick pass either declines or finds exactly the globals the full machine finds,
    on real pickles and on truncated or corrupted copies of them."""
    from sealml.models import fastpath

    data = {**MALICIOUS, **BENIGN}[name]
    quick_answers = 0
    for variant in [data, *_mutations(data)]:
        quick = fastpath.imports(variant, 0, 10**6)
        if quick is None:
            continue
        quick_answers += 1
        end, full = _machine_only(monkeypatch, variant)
        names = {f"{i.module}.{i.name}" for i in quick[1] if i.module is not None}
        assert (quick[0], names) == (end, full)
    if name in BENIGN and not name.endswith(".joblib"):
        assert quick_answers, "the quick pass never answered for an ordinary pickle"
