"""Tree arrays of a loaded gradient-boosting model are checked before any prediction: a
crafted file pointing nodes outside their tree, back up it, or at a missing feature is
refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder

from sealml.errors import IntegrityError
from sealml.models.formats import SKOPS_MEDIA_TYPE, dump_skops, load_model


@pytest.fixture(scope="module")
def fitted() -> bytes:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=300), "c": rng.choice(list("xyz"), 300)})
    label = (frame["a"] > 0).astype(int)
    encode = ColumnTransformer([("c", OrdinalEncoder(), ["c"])], remainder="passthrough")
    model = make_pipeline(encode, HistGradientBoostingClassifier(max_iter=5, random_state=0))
    return dump_skops(model.fit(frame, label))


def _tampered(data: bytes, field: str, value: int) -> bytes:
    model = load_model(data, SKOPS_MEDIA_TYPE, "m.skops")
    nodes = model[-1]._predictors[0][0].nodes
    inner = np.flatnonzero(~nodes["is_leaf"].astype(bool))
    nodes[field][inner[0]] = value
    return dump_skops(model)


def test_an_ordinary_model_loads(fitted: bytes) -> None:
    model = load_model(fitted, SKOPS_MEDIA_TYPE, "m.skops")
    assert model.predict(pd.DataFrame({"a": [1.0], "c": ["x"]})).shape == (1,)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("left", 10**6, "outside its tree"), ("right", 0, "back up it"),
     ("feature_idx", 99, "feature the model does not have")],
)  # fmt: skip
def test_crafted_tree_arrays_are_refused(
    fitted: bytes, field: str, value: int, message: str
) -> None:
    with pytest.raises(IntegrityError, match=message):
        load_model(_tampered(fitted, field, value), SKOPS_MEDIA_TYPE, "m.skops")
