"""`sealml run | lineage | provenance` from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ..conftest import admin_env
from .test_cli import one_line_error


@pytest.fixture
def ready(cli: Any) -> Any:
    assert cli("init", "--insecure-fast-kdf", env=admin_env()).code == 0
    return cli


def test_run_rerun_and_parameters(ready: Any, small_pipeline: Path) -> None:
    first = ready("run", str(small_pipeline), "--json", env=admin_env())
    assert first.code == 0, first.stderr
    data = json.loads(first.stdout)
    assert [s["status"] for s in data["stages"]] == ["executed"] * 3
    again = json.loads(ready("run", str(small_pipeline), "--json", env=admin_env()).stdout)
    assert [s["status"] for s in again["stages"]] == ["cached"] * 3
    changed = ready("run", str(small_pipeline), "--param", "scale=3", "--json", env=admin_env())
    assert [s["status"] for s in json.loads(changed.stdout)["stages"]] == [
        "cached",
        "executed",
        "executed",
    ]
    text = ready("run", str(small_pipeline), env=admin_env())
    assert "cached" in text.stdout and "done" in text.stdout


def test_lineage_and_provenance(ready: Any, small_pipeline: Path, tmp_path: Path) -> None:
    ready("run", str(small_pipeline), env=admin_env())
    tree = ready("lineage", "numbers/total", env=admin_env())
    assert tree.code == 0 and "came from" in tree.stdout and "used by" in tree.stdout
    graph = json.loads(ready("lineage", "numbers/total", "--json", env=admin_env()).stdout)
    names = {n["name"] for n in graph["nodes"]}
    assert names == {"numbers/raw", "numbers/numbers", "numbers/total", "numbers/summary"}
    dot = ready("lineage", "numbers/total", "--format", "dot", env=admin_env()).stdout
    assert dot.startswith("digraph lineage {") and dot.count("->") == 3
    verified = json.loads(
        ready("provenance", "verify", "numbers/summary", "--json", env=admin_env()).stdout
    )
    assert [s["status"] for s in verified] == ["attested", "attested", "attested", "source"]
    exported = tmp_path / "openlineage.jsonl"
    assert ready("provenance", "export", "-o", str(exported), env=admin_env()).code == 0
    events = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [e["job"]["name"] for e in events] == [
        "numbers.parse",
        "numbers.total",
        "numbers.summarise",
    ]
    assert all(e["eventType"] == "COMPLETE" and e["run"]["runId"] for e in events)


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("def broken(:\n", "syntax error"),
        (
            "from sealml.pipeline import Pipeline, stage\n"
            "@stage(inputs={'b': 'report'}, outputs={'a': 'report'})\n"
            "def one(b): return {}\n"
            "@stage(inputs={'a': 'report'}, outputs={'b': 'report'})\n"
            "def two(a): return {}\n"
            "pipeline = Pipeline('loop', stages=[one, two])\n",
            "cycle",
        ),
        (
            "from sealml.pipeline import Pipeline, stage\n"
            "@stage(outputs={'a': 'report'})\n"
            "def one(): raise KeyError('gone')\n"
            "pipeline = Pipeline('fails', stages=[one])\n",
            "stage 'one' failed: KeyError",
        ),
    ],
    ids=["syntax", "cycle", "raises"],
)
def test_bad_pipelines_give_one_line(ready: Any, tmp_path: Path, source: str, needle: str) -> None:
    path = tmp_path / "bad_pipeline.py"
    path.write_text(source)
    one_line_error(ready("run", str(path), env=admin_env()), 2, needle)


def test_bad_run_options(ready: Any, small_pipeline: Path) -> None:
    one_line_error(
        ready("run", str(small_pipeline), "--param", "novalue", env=admin_env()), 2, "KEY=VALUE"
    )
    one_line_error(
        ready("run", str(small_pipeline), "--param", "speed=2", env=admin_env()), 2, "speed"
    )
    # Not JSON, so taken as a string (json.loads used to hit the recursion limit: exit 70).
    deep = ready("run", str(small_pipeline), "--param", "tag=" + "[" * 100_000, env=admin_env())
    assert deep.code in (0, 2) and "internal error" not in deep.stderr, deep.stderr
    one_line_error(
        ready("run", str(small_pipeline), "--executor", "gpu", env=admin_env()),
        2,
        "unknown executor",
    )
    one_line_error(ready("lineage", "nothing", env=admin_env()), 2, "no artifact")


def test_tampered_input_fails_with_exit_1(ready: Any, small_pipeline: Path, ws_path: Path) -> None:
    ready("run", str(small_pipeline), env=admin_env())
    blobs = sorted(
        (
            p
            for p in (ws_path / ".sealml" / "blobs").rglob("*")
            if p.is_file() and p.parent.name != "tmp"
        ),
        key=lambda p: p.stat().st_mtime,
    )
    for blob in blobs:
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
    result = ready("run", str(small_pipeline), "--param", "scale=5", env=admin_env())
    one_line_error(result, 1, "")
    assert ready("provenance", "verify", "numbers/summary", env=admin_env()).code == 1
