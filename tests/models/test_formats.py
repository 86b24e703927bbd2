"""Safe formats: skops and safetensors round trips, and pickles loaded only when clean."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from sealml.errors import IntegrityError, UsageError
from sealml.models.formats import (
    RestrictedUnpickler,
    dump_skops,
    dump_tensors,
    load_pickle,
    load_skops,
    load_tensors,
)

from . import corpus

BENIGN = corpus.benign()


def test_skops_round_trip_is_deterministic_and_predicts_the_same() -> None:
    model = load_pickle(BENIGN["forest.pkl"])
    data = dump_skops(model)
    assert data == dump_skops(model)
    features = np.random.default_rng(1).normal(size=(20, 4))
    assert (load_skops(data).predict(features) == model.predict(features)).all()


def test_skops_bytes_do_not_depend_on_object_identity() -> None:
    """A copy of a model (pickled to the sealing process, or deep-copied for a consumer)
    gives the same bytes, although equal floats such as NaN categories are no longer one
    object."""
    import copy

    import pandas as pd
    from sklearn.preprocessing import OrdinalEncoder

    frame = pd.DataFrame({"a": ["x", None, "y"], "b": ["u", "v", None]})
    encoder = OrdinalEncoder(encoded_missing_value=-1).fit(frame)
    data = dump_skops(encoder)
    assert data == dump_skops(pickle.loads(pickle.dumps(encoder)))  # noqa: S301 - our own
    assert data == dump_skops(copy.deepcopy(encoder))
    assert (load_skops(data).transform(frame) == encoder.transform(frame)).all()


def test_skops_file_naming_a_dangerous_function_is_refused() -> None:
    data = dump_skops(FunctionTransformer(func=os.system))
    with pytest.raises(IntegrityError, match="outside the allowlist"):
        load_skops(data)


def test_skops_garbage_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        load_skops(b"not a zip")
    damaged = bytearray(dump_skops(LogisticRegression()))
    central = damaged.index(b"PK\x01\x02")
    damaged[central + 6 : central + 8] = (89).to_bytes(2, "little")  # "needs zip 8.9"
    with pytest.raises(UsageError, match="not a skops model file"):
        load_skops(bytes(damaged))  # zipfile raises NotImplementedError here


def test_safetensors_round_trip_and_malformed_header() -> None:
    weights = {"layer.weight": np.arange(12, dtype=np.float32).reshape(3, 4)}
    loaded = load_tensors(dump_tensors(weights, {"framework": "numpy"}))
    assert np.array_equal(loaded["layer.weight"], weights["layer.weight"])
    with pytest.raises(UsageError):
        load_tensors(b"\xff" * 8 + b"{}")


@pytest.mark.parametrize(
    "name", ["forest.pkl", "svc_pipeline.pkl", "boosting.joblib", "knn.joblib"]
)
def test_clean_pickles_and_joblib_files_load(name: str) -> None:
    model = load_pickle(BENIGN[name], name)
    assert model.predict(np.zeros((1, 4))).shape == (1,)


def test_malicious_pickle_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(corpus._Call(open, str(marker), "w"))
    with pytest.raises(IntegrityError, match="unsafe"):
        load_pickle(payload)
    assert not marker.exists()


def test_restricted_unpickler_refuses_even_without_the_scan(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(corpus._Call(open, str(marker), "w"))
    with pytest.raises(IntegrityError, match=r"refused to import io\.open"):
        RestrictedUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()


def test_joblib_object_array_payload_is_refused() -> None:
    with pytest.raises(IntegrityError):
        load_pickle(corpus.malicious()["joblib_object_array.joblib"], "m.joblib")
