"""Which callables a model pickle may import: an allowlist, not a denylist.

A pickle runs whatever callables it imports. A global is safe only if it is listed here
exactly, or it is a *class* defined in a package whose classes are plain containers and
estimators (scikit-learn, NumPy, SciPy, pandas), outside their testing helpers. Everything
else is unknown, and names known to execute code, touch files, processes or the network
are reported as critical.
"""

from __future__ import annotations

import functools
import importlib

from .sources import defined_class

PANDAS_CLASSES = {
    "DataFrame": "pandas.core.frame",
    "Series": "pandas.core.series",
    "Index": "pandas.core.indexes.base",
    "RangeIndex": "pandas.core.indexes.range",
    "MultiIndex": "pandas.core.indexes.multi",
    "DatetimeIndex": "pandas.core.indexes.datetimes",
    "TimedeltaIndex": "pandas.core.indexes.timedeltas",
    "PeriodIndex": "pandas.core.indexes.period",
    "CategoricalIndex": "pandas.core.indexes.category",
    "IntervalIndex": "pandas.core.indexes.interval",
    "Categorical": "pandas.core.arrays.categorical",
    "CategoricalDtype": "pandas.core.dtypes.dtypes",
    "StringDtype": "pandas.core.arrays.string_",
    "ArrowDtype": "pandas.core.dtypes.dtypes",
    "DatetimeTZDtype": "pandas.core.dtypes.dtypes",
    "PeriodDtype": "pandas.core.dtypes.dtypes",
    "IntervalDtype": "pandas.core.dtypes.dtypes",
    "SparseDtype": "pandas.core.dtypes.dtypes",
    "Int64Dtype": "pandas.core.arrays.integer",
    "Float64Dtype": "pandas.core.arrays.floating",
    "BooleanDtype": "pandas.core.arrays.boolean",
}

EXACT: frozenset[tuple[str, str]] = frozenset(
    {
        (module, name)
        for module in ("builtins", "__builtin__")
        for name in (
            "set", "frozenset", "dict", "list", "tuple", "complex", "slice", "range",
            "bytearray", "bytes", "int", "float", "bool", "str", "object", "NoneType",
        )
    }
    | {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("collections", "deque"),
        ("collections", "Counter"),
        ("copyreg", "_reconstructor"),
        ("copy_reg", "_reconstructor"),
        ("datetime", "datetime"),
        ("datetime", "date"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("decimal", "Decimal"),
        ("uuid", "UUID"),
        ("functools", "partial"),  # its target is judged on its own
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas.core.internals.blocks", "new_block"),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
        ("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"),
        ("pandas._libs.tslibs.timedeltas", "_timedelta_unpickle"),
        ("pandas.core.arrays.categorical", "_reconstructor"),
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("sklearn.metrics._scorer", "_passthrough_scorer"),
        ("sklearn.utils.validation", "check_array"),  # ColumnTransformer's passthrough
        # Cython helpers that only call ``cls.__new__(cls)``; the class is judged on its own
        ("sklearn.neighbors._kd_tree", "newObj"),
        ("sklearn.neighbors._ball_tree", "newObj"),
        ("sklearn.metrics._dist_metrics", "newObj"),
        ("scipy.sparse._csr", "csr_matrix"),
        ("_codecs", "encode"),  # how protocol 2 pickles bytes: _codecs.encode(str, "latin1")
        ("pyarrow.lib", "_restore_array"),  # pandas frames with Arrow-backed strings
        ("pyarrow.lib", "type_for_alias"),
        ("pyarrow.lib", "py_buffer"),
    }
    # pandas' data structures, under their public names (pandas 3 pickles them so) and
    # where they are defined: the commonest classes of any pickled frame, listed rather
    # than found in pandas' largest sources on every scan (a test checks each against the
    # source, as any other class would be judged).
    | {
        pair
        for name, defined_in in PANDAS_CLASSES.items()
        for pair in (("pandas", name), (defined_in, name))
    }
    | {
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas.core.internals.managers", "SingleBlockManager"),
        ("pandas.arrays", "ArrowStringArray"),
        ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
    }
    | {
        ("torch._utils", name)
        for name in (
            "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
            "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
        )
    }
    | {("torch._tensor", "_rebuild_from_type_v2"), ("torch", "Size"), ("torch", "device")}
    | {
        ("torch", name)
        for name in (
            "FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage",
            "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage",
            "ComplexFloatStorage", "ComplexDoubleStorage", "UntypedStorage",
            "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
            "uint8", "bool", "complex64", "complex128",
        )
    }
    | {("torch.storage", "TypedStorage"), ("torch.storage", "UntypedStorage")}
    # Classes of compiled (Cython) modules, which cannot be read without importing them.
    | {
        ("numpy", name)
        for name in (
            "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
            "float16", "float32", "float64", "longdouble", "complex64", "complex128",
            "clongdouble", "str_", "bytes_", "datetime64", "timedelta64", "intc", "uintc",
        )
    }
    | {
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random._pcg64", "PCG64"),
        ("numpy.random._pcg64", "PCG64DXSM"),
        ("numpy.random._philox", "Philox"),
        ("numpy.random._sfc64", "SFC64"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random._generator", "Generator"),
        ("numpy.random.mtrand", "RandomState"),
        ("sklearn.tree._tree", "Tree"),
        ("sklearn.neighbors._kd_tree", "KDTree"),
        ("sklearn.neighbors._ball_tree", "BallTree"),
    }
    | {
        ("sklearn.metrics._dist_metrics", f"{metric}Distance{bits}")
        for bits in ("", "64", "32")
        for metric in (
            "Euclidean", "SEuclidean", "Manhattan", "Chebyshev", "Minkowski", "Mahalanobis",
            "Hamming", "Canberra", "BrayCurtis", "Jaccard", "Matching", "Dice",
            "RogersTanimoto", "RussellRao", "SokalMichener", "SokalSneath", "Haversine",
        )  # not PyFuncDistance, which wraps a Python function
    }
    | {
        ("sklearn._loss._loss", f"Cy{loss}")
        for loss in (
            "HalfSquaredError", "AbsoluteError", "PinballLoss", "HuberLoss", "HalfPoissonLoss",
            "HalfGammaLoss", "HalfTweedieLoss", "HalfTweedieLossIdentity", "HalfBinomialLoss",
            "ExponentialLoss", "HalfMultinomialLoss",
        )
    }
)  # fmt: skip

# Packages whose classes may be instantiated by a model pickle (checked by importing the
# named module from these packages only, never from the pickle's own choice).
CLASS_PACKAGES = ("sklearn", "numpy", "scipy", "pandas")
# Parts of those packages that touch files, compile or load code, or call out: their classes
# are not plain containers (``numpy.memmap`` alone can truncate any file it is given).
_UNSAFE_MODULE_PARTS = frozenset(
    {
        "testing", "_testing", "tests", "conftest", "_build_utils", "externals", "io", "_io",
        "npyio", "_npyio_impl", "_datasource", "memmap", "distutils", "f2py", "ctypeslib",
        "compat", "clipboard", "parquet", "pytables", "sql", "html", "excel", "plotting",
        "_config", "datasets", "_loader", "parsers",
    }
)  # fmt: skip
_UNSAFE_CLASSES = frozenset({"memmap", "DataSource", "HDFStore", "ExcelWriter", "ExcelFile"})

DANGEROUS_MODULES = frozenset(
    {
        "os", "posix", "nt", "subprocess", "sys", "socket", "shutil", "pty", "runpy", "importlib",
        "webbrowser", "code", "codeop", "ctypes", "multiprocessing", "asyncio", "http", "urllib",
        "ftplib", "smtplib", "telnetlib", "marshal", "pickle", "_pickle", "dill", "cloudpickle",
        "shelve", "tempfile", "pathlib", "io", "_io", "glob", "signal", "threading", "builtins",
        "__builtin__", "operator", "functools", "types", "inspect", "pdb", "bdb", "timeit",
        "requests", "httpx", "paramiko", "platform", "zipimport", "pkgutil", "torch.storage",
    }
)  # fmt: skip
DANGEROUS_NAMES = frozenset(
    {"eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals",
     "locals", "vars", "breakpoint", "input", "system", "popen", "attrgetter", "methodcaller",
     "itemgetter", "_load_from_bytes", "load", "loads", "apply", "execfile", "spawn", "fork"}
)  # fmt: skip


@functools.cache
def _is_safe_class(module: str, name: str) -> bool:
    if not in_class_package(module):
        return False
    if not name.isidentifier() or name.startswith("__") or name in _UNSAFE_CLASSES:
        return False
    # Reading the source is enough for most names, and keeps a cold scan from importing
    # scikit-learn, SciPy and pandas (seconds); anything the source leaves open is imported.
    # (A loaded module's namespace is no shortcut: NumPy and pandas set ``__module__`` to
    # their public names, so only the source says where a class is really defined; pandas
    # re-exports file readers under ``pandas.api.typing``.)
    static = defined_class(module, name)
    if static is not None:
        return static
    try:
        found = getattr(importlib.import_module(module), name)
    except Exception:  # an unknown or broken name is simply not allowed
        return False
    # Re-exports (``pandas.HDFStore``) are judged by where the class is really defined.
    return isinstance(found, type) and in_class_package(getattr(found, "__module__", ""))


def in_class_package(module: str) -> bool:
    parts = module.split(".")
    return parts[0] in CLASS_PACKAGES and not any(part in _UNSAFE_MODULE_PARTS for part in parts)


def judge(module: str, name: str) -> str | None:
    """None when the global is allowed; otherwise the severity of importing it."""
    if (module, name) in EXACT or _is_safe_class(module, name):
        return None
    top = module.split(".", 1)[0]
    if module in DANGEROUS_MODULES or top in DANGEROUS_MODULES or name in DANGEROUS_NAMES:
        return "critical"
    return "high"
