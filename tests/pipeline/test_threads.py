"""Thread pool limits around stages: applied, restored, and rediscovered after a load."""

from __future__ import annotations

import importlib
import sys

import pytest
from threadpoolctl import threadpool_info

from sealml.pipeline import threads


def _openmp_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"}


def test_limit_applies_inside_and_restores_after() -> None:
    import sklearn.ensemble  # noqa: F401 - loads scikit-learn's OpenMP runtime

    before = _openmp_threads()
    assert before, "scikit-learn's OpenMP runtime should be loaded"
    with threads.limit_threads(1):
        assert _openmp_threads() == {1}
    assert _openmp_threads() == before


def test_controller_is_reused_until_a_library_is_loaded() -> None:
    first = threads._controller()
    assert threads._controller() is first
    # CPython's test extension modules: shared libraries nothing else here loads
    fresh = next(
        n
        for n in ("_ctypes_test", "_testbuffer", "_testmultiphase", "xxlimited")
        if n not in sys.modules
    )
    importlib.import_module(fresh)
    assert threads._controller() is not first


def test_load_counter_reads_the_loader() -> None:
    loads = threads._LoadCounter().read()
    if sys.platform != "linux":
        pytest.skip("the load counters are glibc's")
    assert loads is not None and loads[0] > 0
