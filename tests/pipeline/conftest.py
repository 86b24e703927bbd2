"""A small, fast pipeline written to a file, for runner tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

PIPELINE = '''
from pathlib import Path
import os
from sealml.pipeline import Pipeline, Source, stage

MARKERS = Path(os.environ.get("SEALML_TEST_MARKERS", "/nonexistent"))


def mark(name):
    if MARKERS.is_dir():
        (MARKERS / name).write_text("ran")


@stage(inputs={"raw": "file"}, outputs={"numbers": "report"})
def parse(raw, offset=0):
    mark("parse")
    return {"numbers": {"values": [int(x) + offset for x in raw.split()]}}


@stage(inputs={"numbers": "report"}, outputs={"total": "report"})
def total(numbers, scale=1):
    mark("total")
    return {"total": {"sum": sum(numbers["values"]) * scale}}


@stage(inputs={"total": "report"}, outputs={"summary": "file"})
def summarise(total, label="sum"):
    mark("summarise")
    return {"summary": f"{label}={total['sum']}"}


pipeline = Pipeline(
    "numbers",
    stages=[parse, total, summarise],
    sources={"raw": Source(Path("numbers.txt"))},
)
'''


@pytest.fixture
def small_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "numbers.txt").write_text("1 2 3 4\n")
    path = folder / "numbers_pipeline.py"
    path.write_text(textwrap.dedent(PIPELINE))
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("SEALML_TEST_MARKERS", str(markers))
    return path
