"""ONNX models: exported from scikit-learn, checked without running anything (external
data and custom operators refused), imported, registered and loaded like any model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sealml import Workspace
from sealml.errors import IntegrityError, UsageError
from sealml.models.formats import check_model_file, load_model
from sealml.models.onnxmodels import ONNX_MEDIA_TYPE, OnnxModel, dump_onnx
from sealml.models.scanner import scan_bytes
from sealml.serving.model import ServedModel

from ..conftest import DATA

if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("skl2onnx") is None:
    pytest.skip(
        "ONNX support is not installed (pip install 'sealml[onnx]')", allow_module_level=True
    )

import onnx


@pytest.fixture(scope="module")
def credit() -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.read_csv(DATA / "german_credit.csv")
    return frame.drop(columns=["credit_risk"]), frame["credit_risk"]


def _mixed_pipeline(features: pd.DataFrame, labels: pd.Series) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in features if pd.api.types.is_numeric_dtype(features[c])]
    categories = [c for c in features if c not in numeric]
    prepare = ColumnTransformer(
        [
            ("n", StandardScaler(), numeric),
            ("c", OneHotEncoder(handle_unknown="ignore"), categories),
        ]
    )
    model = Pipeline([("prepare", prepare), ("classify", LogisticRegression(max_iter=1000))])
    return model.fit(features, labels)


def test_an_exported_pipeline_predicts_as_the_original(
    credit: tuple[pd.DataFrame, pd.Series],
) -> None:
    features, labels = credit
    original = _mixed_pipeline(features, labels)
    data = dump_onnx(original, features.head(2))
    assert scan_bytes(data, "credit.onnx").verdict == "safe"
    model = load_model(data, ONNX_MEDIA_TYPE, "credit.onnx")
    assert isinstance(model, OnnxModel)
    assert list(model.classes_) == list(original.classes_)
    assert list(model.feature_names_in_) == list(features.columns)
    assert np.array_equal(model.predict(features), original.predict(features))
    assert np.allclose(model.predict_proba(features), original.predict_proba(features), atol=1e-5)
    with pytest.raises(ValueError, match="needs the input"):
        model.predict(features.drop(columns=["age"]))


def _with_external_tensor(data: bytes, location: str) -> bytes:
    """The model with a tensor whose content ONNX Runtime would read from *location*."""
    model = onnx.ModelProto.FromString(data)
    tensor = model.graph.initializer.add()
    tensor.name, tensor.data_type = "leak", onnx.TensorProto.UINT8
    tensor.dims.append(4096)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return bytes(model.SerializeToString())


def _numeric_model(credit: tuple[pd.DataFrame, pd.Series]) -> tuple[Any, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    features, labels = credit
    numeric = features.select_dtypes("number").to_numpy(dtype=np.float32)
    return LogisticRegression(max_iter=1000).fit(numeric, labels), numeric


def test_external_data_and_custom_operators_are_refused(
    credit: tuple[pd.DataFrame, pd.Series], tmp_path: Path
) -> None:
    fitted, numeric = _numeric_model(credit)
    clean = dump_onnx(fitted, numeric[:1])
    reaching = _with_external_tensor(clean, "../../../../etc/passwd")
    result = scan_bytes(reaching, "model.onnx")
    assert result.verdict == "unsafe"
    assert result.findings[0].kind == "external_data" and "etc/passwd" in result.findings[0].detail
    with pytest.raises(IntegrityError, match="etc/passwd"):
        load_model(reaching, ONNX_MEDIA_TYPE, "model.onnx")

    custom = onnx.ModelProto.FromString(clean)
    node = custom.graph.node[0]
    node.domain = "com.example.native"
    custom.opset_import.add(domain="com.example.native", version=1)
    custom_bytes = custom.SerializeToString()
    judged = scan_bytes(custom_bytes, "model.onnx")
    assert judged.verdict == "unknown" and judged.findings[0].kind == "custom_operator"
    with pytest.raises(IntegrityError, match="native code"):
        load_model(custom_bytes, ONNX_MEDIA_TYPE, "model.onnx")

    for broken in (clean[: len(clean) // 2], b"\x00" * 64, b""):
        assert scan_bytes(broken, "model.onnx").verdict != "safe"
        with pytest.raises(IntegrityError):
            load_model(broken, ONNX_MEDIA_TYPE, "model.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07\x12\x00not protobuf")
    with pytest.raises(UsageError):
        check_model_file(garbage, ONNX_MEDIA_TYPE)


def test_an_onnx_model_is_imported_registered_and_loaded(
    credit: tuple[pd.DataFrame, pd.Series], workspace: Workspace, tmp_path: Path
) -> None:
    fitted, numeric = _numeric_model(credit)
    path = tmp_path / "credit.onnx"
    path.write_bytes(dump_onnx(fitted, numeric[:1]))
    artifact = workspace.import_model(path, "https://hub.example/credit.onnx")
    assert workspace.info(artifact).media_type == ONNX_MEDIA_TYPE
    version = workspace.register_model(artifact, "credit-onnx")
    described, model = workspace.resolve_model("credit-onnx", version.version)
    assert described.version == 1 and model.n_features_in_ == numeric.shape[1]
    assert np.array_equal(model.predict(numeric), fitted.predict(numeric))
    served = ServedModel.build(
        "credit-onnx", 1, artifact, model, None, max_batch=64, margin=0.1
    )  # what `sealml serve` makes of it
    rows = numeric[:5].astype(float).tolist()
    inference = served.infer(served.inputs(rows, rows))
    assert inference.labels == fitted.predict(numeric[:5]).tolist()
    assert np.allclose(inference.probabilities, fitted.predict_proba(numeric[:5]), atol=1e-5)
    reaching = tmp_path / "reaching.onnx"
    reaching.write_bytes(_with_external_tensor(path.read_bytes(), "/etc/passwd"))
    with pytest.raises(IntegrityError, match="not imported"):
        workspace.import_model(reaching, "https://hub.example/reaching.onnx")


def test_cli_scan(cli: Any, credit: tuple[pd.DataFrame, pd.Series], tmp_path: Path) -> None:
    fitted, numeric = _numeric_model(credit)
    clean = tmp_path / "clean.onnx"
    clean.write_bytes(dump_onnx(fitted, numeric[:1]))
    reaching = tmp_path / "reaching.onnx"
    reaching.write_bytes(_with_external_tensor(clean.read_bytes(), "../secrets.bin"))
    assert cli("scan", str(clean)).code == 0
    refused = cli("scan", str(reaching))
    assert refused.code == 1 and "secrets.bin" in refused.stdout
