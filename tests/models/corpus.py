"""A corpus of malicious and benign model files, built on the spot (nothing is downloaded).

Malicious files use distinct techniques: different dangerous callables, every pickle
protocol, STACK_GLOBAL with names from the memo or computed at load time, INST/OBJ,
extension codes, nested archives, PyTorch-style zips with odd inner names, NumPy object
arrays, joblib (plain and compressed every way joblib compresses), legacy multi-pickle
files. Benign files are real scikit-learn models, NumPy arrays, pandas frames and
PyTorch-style state dicts. Nothing here is ever unpickled.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import tarfile
import types
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard


class _Call:
    """An object that pickles as ``function(*args)`` (the classic payload shape)."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.function, self.args)


def _op(name: str) -> bytes:
    import pickletools

    return next(o.code.encode("latin1") for o in pickletools.opcodes if o.name == name)


def _short(text: str) -> bytes:
    data = text.encode()
    return _op("SHORT_BINUNICODE") + bytes([len(data)]) + data


def _zip(entries: dict[str, bytes]) -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return sink.getvalue()


def _tar(entries: dict[str, bytes], compression: str = "") -> bytes:
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode=f"w:{compression}") as archive:
        for name, data in entries.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return sink.getvalue()


def _npy_object(payload: bytes) -> bytes:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


def malicious() -> dict[str, bytes]:
    import os
    import subprocess

    system = os.system
    corpus: dict[str, bytes] = {}
    for protocol in range(6):
        corpus[f"system_protocol{protocol}.pkl"] = pickle.dumps(
            _Call(system, "id"), protocol=protocol
        )
    corpus["popen.pkl"] = pickle.dumps(_Call(subprocess.Popen, ["id"]))
    corpus["check_output.pkl"] = pickle.dumps(_Call(subprocess.check_output, ["id"]))
    corpus["eval.pkl"] = pickle.dumps(_Call(eval, "1+1"))
    corpus["exec.pkl"] = pickle.dumps(_Call(exec, "import os"))
    corpus["dunder_import.pkl"] = pickle.dumps(_Call(__import__, "os"))
    corpus["getattr.pkl"] = pickle.dumps(_Call(getattr, _Call(__import__, "os"), "system"))
    corpus["compile.pkl"] = pickle.dumps(_Call(compile, "1", "x", "eval"))
    corpus["open.pkl"] = pickle.dumps(_Call(open, "/etc/passwd"))
    import runpy
    import shutil
    import socket
    import webbrowser

    corpus["runpy.pkl"] = pickle.dumps(_Call(runpy.run_path, "/tmp/x.py"))
    corpus["socket.pkl"] = pickle.dumps(_Call(socket.create_connection, ("10.0.0.1", 4444)))
    corpus["rmtree.pkl"] = pickle.dumps(_Call(shutil.rmtree, "/"))
    corpus["webbrowser.pkl"] = pickle.dumps(_Call(webbrowser.open, "http://x"))
    import importlib
    import operator

    corpus["import_module.pkl"] = pickle.dumps(_Call(importlib.import_module, "os"))
    corpus["methodcaller.pkl"] = pickle.dumps(_Call(operator.methodcaller, "system", "id"))
    corpus["nested_pickle_loads.pkl"] = pickle.dumps(
        _Call(pickle.loads, pickle.dumps(_Call(system, "id")))
    )
    import marshal

    corpus["marshal.pkl"] = pickle.dumps(_Call(marshal.loads, b"\xe3"))
    corpus["types_function.pkl"] = b"ctypes\nFunctionType\n(NNtR."
    import timeit

    corpus["timeit.pkl"] = pickle.dumps(_Call(timeit.timeit, "import os"))
    import ctypes

    corpus["ctypes.pkl"] = pickle.dumps(_Call(ctypes.CDLL, "libc.so.6"))
    # Hand-written streams: names from the memo, computed names, INST, OBJ, EXT1, py2 names.
    proto = _op("PROTO") + b"\x04"
    corpus["memo_trick.pkl"] = (
        proto + _short("os") + _op("MEMOIZE") + _short("system") + _op("MEMOIZE") + _op("POP")
        + _op("POP") + _op("BINGET") + b"\x00" + _op("BINGET") + b"\x01" + _op("STACK_GLOBAL")
        + _short("id") + _op("TUPLE1") + _op("REDUCE") + _op("STOP")
    )  # fmt: skip
    corpus["computed_name.pkl"] = (
        proto + _op("GLOBAL") + b"builtins\nstr\n" + _short("o") + _op("TUPLE1") + _op("REDUCE")
        + _short("system") + _op("STACK_GLOBAL") + _op("STOP")
    )  # fmt: skip
    corpus["inst.pkl"] = b"(S'id'\nios\nsystem\np0\n."
    corpus["obj.pkl"] = b"\x80\x01(cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01o."
    corpus["extension_code.pkl"] = (
        proto + _op("EXT1") + b"\xf0" + _op("EMPTY_TUPLE") + _op("REDUCE") + _op("STOP")
    )
    # no pickle suffix and no pickle-looking first byte: NONE, POP, then the import
    corpus["headless_protocol0"] = b"N0cos\nsystem\n(S'id'\ntR."
    corpus["py2_builtin.pkl"] = b"c__builtin__\neval\n(S'1'\ntR."
    corpus["nt_system.pkl"] = b"cnt\nsystem\n(S'dir'\ntR."
    corpus["benign_then_evil.pkl"] = pickle.dumps([OrderedDict(a=1), _Call(system, "id")])
    evil = pickle.dumps(_Call(system, "id"))
    corpus["nested_archives.zip"] = _zip({"outer/inner.zip": _zip({"model/data.pkl": evil})})
    corpus["torch_odd_name.pt"] = _zip(
        {"archive/.hidden/xyz.bin": evil, "archive/version": b"3\n", "archive/data/0": b"\0" * 8}
    )
    corpus["torch_data_pkl.pt"] = _zip({"model/data.pkl": evil, "model/version": b"3\n"})
    corpus["object_array.npy"] = _npy_object(evil)
    corpus["object_array.npz"] = _zip({"weights.npy": _npy_object(evil)})
    # PyTorch's oldest format: a tar of sys_info, pickle, storages and tensors
    corpus["legacy_torch_tar.pt"] = _tar(
        {"sys_info": pickle.dumps({"protocol_version": 1001}, protocol=2), "pickle": evil,
         "storages": pickle.dumps(0, protocol=2), "tensors": pickle.dumps(0, protocol=2)}
    )  # fmt: skip
    # pandas.read_pickle infers Zstandard from the suffix
    corpus["frame.pkl.zst"] = zstandard.ZstdCompressor().compress(evil)
    corpus["export.tar.gz"] = _tar({"export/weights": evil, "export/README": b"a model\n"}, "gz")
    corpus["legacy_torch.pt"] = pickle.dumps(0x1950A86A20F9469CFC6C) + pickle.dumps(1001) + evil
    import joblib

    sink = io.BytesIO()
    joblib.dump({"model": _Call(system, "id")}, sink)
    corpus["joblib_plain.joblib"] = sink.getvalue()
    sink = io.BytesIO()
    joblib.dump({"model": _Call(system, "id")}, sink, compress=3)
    corpus["joblib_compressed.joblib"] = sink.getvalue()
    # joblib.load recognises every compression by its first bytes, whatever the name
    for method, name in (
        ("gzip", "joblib_gzip.joblib"),
        ("bz2", "joblib_bz2.joblib"),
        ("xz", "joblib_xz.joblib"),
        ("lzma", "joblib_lzma_no_suffix"),
    ):
        sink = io.BytesIO()
        joblib.dump({"model": _Call(system, "id")}, sink, compress=(method, 3))
        corpus[name] = sink.getvalue()
    import numpy

    hidden = numpy.empty(2, dtype=object)
    hidden[0], hidden[1] = 1.5, _Call(system, "id")
    sink = io.BytesIO()
    joblib.dump({"coef": numpy.zeros(4), "labels": hidden}, sink)
    corpus["joblib_object_array.joblib"] = sink.getvalue()
    # Classes in otherwise allowed packages that touch files, also reached by re-export.
    corpus["numpy_memmap.pkl"] = b"cnumpy\nmemmap\n(S'/etc/passwd'\nS'uint8'\nS'w+'\ntR."
    corpus["pandas_reexport.pkl"] = b"cpandas\nHDFStore\n(S'/tmp/x.h5'\nS'w'\ntR."
    return corpus


def _fake_torch_state_dict() -> bytes:
    """A PyTorch-style zip checkpoint, written without torch: the pickle references torch's
    tensor rebuild functions and storages by name, as torch.save does."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: Any) -> None:
        return None

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    storage = type("FloatStorage", (), {"__module__": "torch"})
    torch.FloatStorage = storage  # type: ignore[attr-defined]
    torch._utils = utils  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        tensor_bytes = object()  # stands for the storage instance torch saves out of band

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj: Any) -> Any:
                if obj is tensor_bytes:
                    return ("storage", storage, "0", "cpu", 4)
                return None

        state = OrderedDict(
            (
                f"layer{i}.weight",
                _Call(_rebuild_tensor_v2, tensor_bytes, 0, (2, 2), (2, 1), False, OrderedDict()),
            )
            for i in range(3)
        )
        sink = io.BytesIO()
        Pickler(sink, protocol=2).dump(state)
        data = sink.getvalue()
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return _zip(
        {"checkpoint/data.pkl": data, "checkpoint/version": b"3\n", "checkpoint/data/0": b"\0" * 16}
    )


def benign() -> dict[str, bytes]:
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        IsolationForest,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 4))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    frame = pd.DataFrame(features, columns=list("abcd")).assign(
        colour=rng.choice(["red", "blue"], 200)
    )
    models: dict[str, Any] = {
        "logistic": LogisticRegression().fit(features, labels),
        "forest": RandomForestClassifier(n_estimators=5, random_state=0).fit(features, labels),
        "boosting": GradientBoostingClassifier(n_estimators=5).fit(features, labels),
        "hist_boosting": HistGradientBoostingClassifier(max_iter=5).fit(features, labels),
        "svc_pipeline": make_pipeline(StandardScaler(), SVC()).fit(features, labels),
        "kmeans": KMeans(n_clusters=3, n_init=2, random_state=0).fit(features),
        "pca": PCA(2).fit(features),
        "tree": DecisionTreeClassifier().fit(features, labels),
        "linear": LinearRegression().fit(features, labels),
        "knn": KNeighborsClassifier().fit(features, labels),
        "isolation": IsolationForest(n_estimators=5, random_state=0).fit(features),
        "mlp": MLPClassifier(hidden_layer_sizes=(4,), max_iter=2000, random_state=0).fit(
            features, labels
        ),
        "naive_bayes": GaussianNB().fit(features, labels),
        "column_pipeline": make_pipeline(
            ColumnTransformer([("onehot", OneHotEncoder(), ["colour"])], remainder="passthrough"),
            LogisticRegression(),
        ).fit(frame, labels),
    }
    corpus: dict[str, bytes] = {}
    for index, (name, model) in enumerate(models.items()):
        corpus[f"{name}.pkl"] = pickle.dumps(model, protocol=2 + index % 4)
        sink = io.BytesIO()
        compression = (0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3))[index % 6]
        joblib.dump(model, sink, compress=compression)
        corpus[f"{name}.joblib"] = sink.getvalue()
    sink = io.BytesIO()
    np.save(sink, features)
    corpus["features.npy"] = sink.getvalue()
    sink = io.BytesIO()
    np.savez(sink, features=features, labels=labels)
    corpus["arrays.npz"] = sink.getvalue()
    corpus["array_protocol0.pkl"] = pickle.dumps(features, protocol=0)
    corpus["array.pkl"] = pickle.dumps(features, protocol=4)
    corpus["frame.pkl"] = pickle.dumps(frame)
    corpus["series.pkl"] = pickle.dumps(frame["a"])
    corpus["state_dict.pkl"] = pickle.dumps(
        OrderedDict((f"w{i}", features[:, i]) for i in range(4))
    )
    corpus["torch_state_dict.pt"] = _fake_torch_state_dict()
    corpus["models.zip"] = _zip(
        {"bundle/forest.pkl": corpus["forest.pkl"], "bundle/x.npy": corpus["features.npy"]}
    )
    corpus["models.tar.gz"] = _tar(
        {"bundle/forest": corpus["forest.pkl"], "bundle/README.md": b"# A forest\n"}, "gz"
    )
    return corpus


def write(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths
