"""Checks of a loaded model's internal arrays that its loader cannot make.

scikit-learn's histogram gradient boosting predicts by walking node arrays without bounds
checks: a crafted file (skops or pickle) whose node indices point outside the array, or
back up the tree, reads out of bounds or loops for ever at prediction time. The types
themselves are allowed, so the structure is checked after loading, before any use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import IntegrityError

_MAX_DEPTH = 12


def _objects(value: Any, seen: set[int], depth: int = 0) -> Iterator[Any]:
    """Every scikit-learn estimator reachable from *value* (pipelines, column
    transformers, meta-estimators), each once."""
    if depth > _MAX_DEPTH or id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, list | tuple):
        for item in value:
            yield from _objects(item, seen, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _objects(item, seen, depth + 1)
    elif hasattr(value, "get_params") and hasattr(value, "__dict__"):
        yield value
        for item in vars(value).values():
            yield from _objects(item, seen, depth + 1)


def _check_predictor(predictor: Any, width: int | None, where: str) -> None:
    nodes = predictor.nodes
    size = len(nodes)
    inner = np.flatnonzero(~nodes["is_leaf"].astype(bool))
    for child in ("left", "right"):
        targets = nodes[child][inner].astype(np.int64)
        # Children come after their parent in the array (pre-order): no way out, no cycle.
        if ((targets <= inner) | (targets >= size)).any():
            raise IntegrityError(f"{where}: a tree node points outside its tree or back up it")
    features = nodes["feature_idx"][inner].astype(np.int64)
    if width is not None and ((features < 0) | (features >= width)).any():
        raise IntegrityError(f"{where}: a tree node reads a feature the model does not have")
    categorical = inner[nodes["is_categorical"][inner].astype(bool)]
    if len(categorical):
        bitsets = nodes["bitset_idx"][categorical].astype(np.int64)
        available = len(getattr(predictor, "raw_left_cat_bitsets", ()))
        if ((bitsets < 0) | (bitsets >= available)).any():
            raise IntegrityError(f"{where}: a tree node reads a category set that is not there")


def check_structure(model: Any) -> None:
    """Refuse a loaded model whose tree arrays could crash or hang prediction."""
    for estimator in _objects(model, set()):
        rounds = getattr(estimator, "_predictors", None)
        if not isinstance(rounds, list):
            continue
        width = getattr(estimator, "n_features_in_", None)
        where = type(estimator).__name__
        for round_ in rounds:
            for predictor in round_ if isinstance(round_, list) else [round_]:
                if hasattr(predictor, "nodes"):
                    _check_predictor(predictor, width, where)
