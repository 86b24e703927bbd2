"""ONNX models: checked without running anything, run by ONNX Runtime, exported from
scikit-learn by skl2onnx (``pip install 'sealml[onnx]'``).

An ONNX file is a protocol buffer of operators and tensors, not code, but two of its
features reach beyond the file: tensors stored as *external data* (ONNX Runtime reads
whatever file the model names, ``../../`` included) and operators of a custom domain (run
by a native library registered outside the model). The check refuses both, and anything
that does not parse as a valid model, before ONNX Runtime ever sees the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import IntegrityError, UsageError

ONNX_MEDIA_TYPE = "application/onnx"
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
MAX_NODES = 200_000
CLASSES_KEY = "sealml.classes"  # metadata a model exported by dump_onnx carries

Problem = tuple[str, str, str]  # (severity, kind, detail), as the scanner reports them


def onnx_problems(data: bytes) -> list[Problem]:
    """Why an ONNX model should not be loaded; empty when it may be."""
    try:
        import onnx
    except ImportError:
        return [
            ("medium", "unchecked", "ONNX support is not installed: pip install 'sealml[onnx]'")
        ]
    try:
        model = onnx.ModelProto.FromString(bytes(data))
    except Exception as error:  # protobuf's DecodeError and friends
        return [("high", "malformed", f"not an ONNX model: {str(error)[:120]}")]
    problems: list[Problem] = []
    local = {function.domain for function in model.functions}
    nodes = 0
    for where, graph_nodes, tensors in _parts(model):
        if nodes > MAX_NODES:
            break
        for tensor in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                entries = {entry.key: entry.value for entry in tensor.external_data}
                problems.append(
                    (
                        "critical",
                        "external_data",
                        f"{where}: tensor {tensor.name!r} reads the file "
                        f"{entries.get('location', '?')!r} from outside the model",
                    )
                )
        for node in graph_nodes:
            nodes += 1
            if node.domain not in STANDARD_DOMAINS and node.domain not in local:
                problems.append(
                    (
                        "high",
                        "custom_operator",
                        f"{where}: operator {node.op_type} of domain {node.domain!r} runs "
                        "native code from outside the model",
                    )
                )
    if nodes > MAX_NODES:
        problems.append(("high", "limit", f"{nodes} operators is over the limit"))
    if not problems:
        try:
            onnx.checker.check_model(model)
        except Exception as error:  # ValidationError, and C++ checker errors
            problems.append(("high", "malformed", f"invalid ONNX model: {str(error)[:160]}"))
    return problems


def _parts(model: Any) -> Iterator[tuple[str, list[Any], list[Any]]]:
    """(where, operators, tensors) of the main graph, every subgraph and every local
    function, however deeply nested."""
    pending: list[tuple[str, Any]] = [("graph", model.graph)]
    for function in model.functions:
        yield f"function {function.name}", list(function.node), []
        pending.extend(_subgraphs(f"function {function.name}", function.node))
    while pending:
        where, graph = pending.pop()
        tensors = [*graph.initializer]
        for sparse in graph.sparse_initializer:
            tensors.extend((sparse.values, sparse.indices))
        for node in graph.node:
            for attribute in node.attribute:
                tensors.extend([attribute.t, *attribute.tensors])
                sparse = [attribute.sparse_tensor, *attribute.sparse_tensors]
                tensors.extend(item.values for item in sparse)
        yield where, list(graph.node), tensors
        pending.extend(_subgraphs(where, graph.node))


def _subgraphs(where: str, nodes: Any) -> Iterator[tuple[str, Any]]:
    for node in nodes:
        for attribute in node.attribute:
            graphs = list(attribute.graphs)
            if attribute.HasField("g"):
                graphs.append(attribute.g)
            for graph in graphs:
                yield f"{where} > {node.op_type} {attribute.name}", graph


def load_onnx(data: bytes, name: str = "model.onnx") -> OnnxModel:
    """An ONNX model ready to predict, after :func:`onnx_problems` found nothing."""
    problems = onnx_problems(data)
    if problems:
        raise IntegrityError(f"{name}: {problems[0][2]}")
    import onnx
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # warnings would reach the server's log
    session = onnxruntime.InferenceSession(
        bytes(data), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return OnnxModel(session, _classes(onnx.ModelProto.FromString(bytes(data))))


def _classes(model: Any) -> list[Any] | None:
    """The class labels: as dump_onnx recorded them, else from a classifier operator."""
    for prop in model.metadata_props:
        if prop.key == CLASSES_KEY:
            return list(json.loads(prop.value))
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "classlabels_ints":
                return list(attribute.ints)
            if attribute.name == "classlabels_strings":
                return [s.decode() for s in attribute.strings]
    return None


_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


class OnnxModel:
    """A scikit-learn-like face on an ONNX Runtime session (``predict``,
    ``predict_proba``, ``classes_``, ``n_features_in_``), so the evaluation, gates and
    server treat it as they treat any classifier. Inputs: one column per model input
    (a DataFrame, by name), or one matrix input (an array, or a DataFrame in order)."""

    def __init__(self, session: Any, classes: list[Any] | None) -> None:
        self._session = session
        self._inputs = [(i.name, i.type, i.shape) for i in session.get_inputs()]
        for name, kind, _ in self._inputs:
            if kind not in _DTYPES:
                raise UsageError(f"ONNX input {name!r} has the unsupported type {kind}")
        self._outputs = [o.name for o in session.get_outputs()]
        self._by_column = len(self._inputs) > 1
        if self._by_column:
            self.feature_names_in_ = np.array([name for name, _, _ in self._inputs], dtype=object)
            self.n_features_in_ = len(self._inputs)
        else:
            width = self._inputs[0][2][-1] if self._inputs[0][2] else None
            if isinstance(width, int):
                self.n_features_in_ = width
        if classes is not None:
            self.classes_ = np.asarray(classes)

    def __repr__(self) -> str:
        return f"OnnxModel({len(self._inputs)} inputs, outputs {self._outputs})"

    def _feeds(self, rows: Any) -> dict[str, Any]:
        if not self._by_column:
            name, kind, _ = self._inputs[0]
            return {name: np.asarray(rows, dtype=_DTYPES[kind])}
        columns = getattr(rows, "columns", None)
        feeds: dict[str, Any] = {}
        for position, (name, kind, _) in enumerate(self._inputs):
            if columns is not None:
                if name not in columns:
                    raise ValueError(f"the model needs the input {name!r}")
                values = np.asarray(rows[name])
            else:
                values = np.asarray(rows)[:, position]
            if _DTYPES[kind] is object:
                values = values.astype(str).astype(object)
            feeds[name] = values.astype(_DTYPES[kind]).reshape(-1, 1)
        return feeds

    def _run(self, rows: Any) -> list[Any]:
        return list(self._session.run(None, self._feeds(rows)))

    def predict(self, rows: Any) -> Any:
        return np.asarray(self._run(rows)[0]).ravel()

    def predict_proba(self, rows: Any) -> Any:
        outputs = self._run(rows)
        if len(outputs) < 2:
            raise ValueError("this ONNX model gives no probabilities")
        found = outputs[1]
        if isinstance(found, list):  # a ZipMap: one {class: probability} per row
            order = list(getattr(self, "classes_", sorted(found[0]) if found else []))
            return np.array([[row[c] for c in order] for row in found], dtype=np.float64)
        return np.asarray(found, dtype=np.float64)


def dump_onnx(model: Any, sample: Any) -> bytes:
    """A fitted scikit-learn model as ONNX bytes (skl2onnx), its inputs typed after
    *sample* (a DataFrame: one input per column; an array: one matrix input), class
    probabilities as a plain matrix, the classes recorded in the model's metadata."""
    try:
        from skl2onnx import to_onnx
    except ImportError:
        raise UsageError("ONNX export needs skl2onnx: pip install 'sealml[onnx]'") from None
    if hasattr(sample, "columns"):
        from pandas.api.types import is_numeric_dtype

        sample = sample.copy()
        for column in sample.columns:  # skl2onnx types strings only from object columns
            if not is_numeric_dtype(sample[column]):
                sample[column] = sample[column].astype(str).astype(object)
    try:
        exported = to_onnx(model, sample, options={"zipmap": False}, target_opset=17)
    except Exception as error:  # skl2onnx raises many kinds for what it cannot convert
        raise UsageError(f"skl2onnx cannot convert this model: {str(error)[:200]}") from None
    classes = getattr(model, "classes_", None)
    if classes is not None:
        entry = exported.metadata_props.add()
        entry.key, entry.value = CLASSES_KEY, json.dumps(np.asarray(classes).tolist())
    return bytes(exported.SerializeToString())
