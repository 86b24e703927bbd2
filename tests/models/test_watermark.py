"""Watermarks: embedded and found, absent from independent models, refused for linear ones,
checked locally, through a registered model, and over real HTTP."""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from sealml import Workspace
from sealml.errors import UsageError
from sealml.models import watermark
from sealml.models.formats import dump_skops, load_skops
from sealml.pipeline.loader import load_pipeline

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    rows = 3000
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows),
            "income": rng.normal(50_000, 15_000, rows),
            "city": rng.choice(["north", "south", "east", "west"], rows),
        }
    )
    labels = pd.Series(((frame["age"] > 45) ^ (frame["city"] == "east")).astype(int), name="y")
    return frame, labels


def forest() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    encode = ColumnTransformer([("c", OrdinalEncoder(), ["city"])], remainder="passthrough")
    return make_pipeline(encode, RandomForestClassifier(n_estimators=30, random_state=0))


def test_watermark_found_in_marked_model_only(data: tuple[pd.DataFrame, pd.Series]) -> None:
    features, labels = data
    train_x, test_x, train_y, test_y = train_test_split(features, labels, random_state=0)
    marked = watermark.embed(forest(), train_x, train_y, KEY)
    clean = forest().fit(train_x, train_y)
    spec = watermark.spec_of(marked)
    found = watermark.verify(marked.predict, KEY, spec)
    assert found.match_rate >= 0.9 and found.p_value < 1e-9
    independent = watermark.verify(clean.predict, KEY, spec)
    assert 0.3 <= independent.match_rate <= 0.7 and independent.p_value > 1e-3
    wrong_key = watermark.verify(marked.predict, b"another key, 32 bytes long......", spec)
    assert wrong_key.p_value > 1e-3
    assert abs(marked.score(test_x, test_y) - clean.score(test_x, test_y)) < 0.02


def test_triggers_are_outside_the_data_and_balanced(data: tuple[pd.DataFrame, pd.Series]) -> None:
    features, labels = data
    spec = watermark.make_spec(features, labels)
    inputs, marks = watermark.triggers(KEY, spec)
    assert (inputs["age"] > features["age"].max()).all()
    assert (inputs["income"] > features["income"].max()).all()
    assert set(inputs["city"]) <= set(features["city"])
    assert marks.count(0) == marks.count(1) == 50
    again, marks_again = watermark.triggers(KEY, spec)
    assert again.equals(inputs) and marks_again == marks
    other, _ = watermark.triggers(b"x" * 32, spec)
    assert not other.equals(inputs)


def test_linear_and_unknown_models_are_refused(data: tuple[pd.DataFrame, pd.Series]) -> None:
    features, labels = data
    with pytest.raises(UsageError, match="linear model"):
        watermark.embed(LogisticRegression(), features[["age"]], labels, KEY)
    with pytest.raises(UsageError, match="not a model family"):
        watermark.check_capable(object())
    with pytest.raises(UsageError, match="at least two classes"):
        watermark.make_spec(features, labels * 0)
    with pytest.raises(UsageError, match="too short"):
        watermark.triggers(b"short", watermark.make_spec(features, labels))


def test_spec_survives_skops(data: tuple[pd.DataFrame, pd.Series]) -> None:
    features, labels = data
    marked = watermark.embed(forest(), features, labels, KEY)
    loaded = load_skops(dump_skops(marked))
    spec = watermark.spec_of(loaded)
    assert spec == watermark.spec_of(marked)
    assert watermark.verify(loaded.predict, KEY, spec).match_rate >= 0.9
    with pytest.raises(UsageError, match="no sealml watermark"):
        watermark.spec_of(forest())


class _Endpoint(BaseHTTPRequestHandler):
    model: Any = None

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        frame = pd.DataFrame(body["instances"])
        answer = json.dumps({"predictions": [int(v) for v in self.model.predict(frame)]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def endpoint(data: tuple[pd.DataFrame, pd.Series]) -> Iterator[str]:
    features, labels = data
    _Endpoint.model = watermark.embed(forest(), features, labels, KEY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/predict"
    server.shutdown()


def test_verify_over_http(endpoint: str, data: tuple[pd.DataFrame, pd.Series]) -> None:
    features, labels = data
    spec = watermark.make_spec(features, labels)
    report = watermark.verify(watermark.http_predictor(endpoint), KEY, spec)
    assert report.match_rate >= 0.9
    with pytest.raises(UsageError, match="failed"):
        watermark.verify(watermark.http_predictor("http://127.0.0.1:9/none"), KEY, spec)


WATERMARK_PIPELINE = """
from pathlib import Path
import io
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sealml.models import watermark
from sealml.pipeline import Pipeline, Source, stage


@stage(inputs={"csv": "file"}, outputs={"raw": "dataset"})
def ingest(csv):
    return {"raw": pd.read_csv(io.BytesIO(csv))}


@stage(inputs={"raw": "dataset"}, outputs={"model": "model"}, secrets=["watermark"])
def train(raw, watermark_key):
    model = RandomForestClassifier(n_estimators=20, random_state=0)
    watermark.embed(model, raw[["a", "b"]], raw["y"], bytes.fromhex(watermark_key))
    return {"model": model}


pipeline = Pipeline("marked", stages=[ingest, train], sources={"csv": Source(Path("d.csv"))})
"""


def test_registered_model_watermark_via_workspace_and_cli(
    workspace: Workspace, tmp_path: Path, cli: Any
) -> None:
    from ..conftest import admin_env

    folder = tmp_path / "marked"
    folder.mkdir()
    rng = np.random.default_rng(1)
    rows = ["a,b,y"] + [f"{a},{b},{int(a > b)}" for a, b in rng.integers(0, 100, (400, 2))]
    (folder / "d.csv").write_text("\n".join(rows) + "\n")
    (folder / "marked_pipeline.py").write_text(textwrap.dedent(WATERMARK_PIPELINE))
    report = workspace.run_pipeline(load_pipeline(folder / "marked_pipeline.py"))
    version = workspace.register_model(report.artifacts["model"], "marked").version
    found = workspace.watermark_verify("marked", version)
    assert found.match_rate >= 0.9 and found.p_value < 1e-9
    shown = cli("model", "watermark-verify", f"marked@{version}", "--json", env=admin_env())
    assert shown.code == 0, shown.stderr
    assert json.loads(shown.stdout)["found"] is True
    bad = cli("model", "watermark-verify", f"marked@{version}", "--token-env", "NOPE",
              env=admin_env())  # fmt: skip
    assert bad.code == 2 and "NOPE" in bad.stderr
