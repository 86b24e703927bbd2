"""Judging names from source must agree with importing them, wherever it gives an answer."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from sealml.models.allowlist import in_class_package
from sealml.models.sources import defined_class

MODULES = [
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.preprocessing",
    "sklearn.pipeline",
    "sklearn.utils",
    "sklearn.tree",
    "sklearn.datasets",
    "pandas",
    "pandas.io.pytables",
    "numpy",
    "numpy.lib.npyio",
    "scipy.sparse",
    "scipy.io",
]

MINIMUM_ANSWERED = {
    "sklearn.ensemble": 10,
    "sklearn.linear_model": 10,
    "sklearn.preprocessing": 10,
    "pandas": 10,
    "numpy": 0,
}


def defining_module(found: type) -> str:
    """Where a class is really defined, from the code of its methods (``__module__`` and
    ``inspect.getfile`` can be fooled: pandas sets ``__module__`` to ``pandas`` for classes
    defined deep in ``pandas.io``)."""
    files = [v.__code__.co_filename for v in vars(found).values() if hasattr(v, "__code__")]
    if not files:
        raise TypeError("no Python code")
    parts = Path(files[0]).with_suffix("").parts
    start = max(
        i for i, part in enumerate(parts) if part in ("sklearn", "numpy", "scipy", "pandas")
    )
    return ".".join(p for p in parts[start:] if p != "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_static_answers_match_imports(module: str) -> None:
    imported = importlib.import_module(module)
    answered = 0
    for name in sorted(dir(imported)):
        if name.startswith("__"):
            continue
        found = getattr(imported, name)
        if isinstance(found, type):
            try:
                origin = defining_module(found)
            except (TypeError, ValueError, AttributeError):
                continue  # compiled: no source to compare with
            truth = in_class_package(origin)
        else:
            truth = False
        static = defined_class(module, name)
        if static is not None:
            answered += 1
            assert static == truth, f"{module}.{name}: source says {static}, import says {truth}"
    # compiled and dynamically built modules (numpy) leave most names to the import
    assert answered >= MINIMUM_ANSWERED.get(module, 1), answered


def test_unknown_modules_and_names_are_left_open() -> None:
    assert defined_class("sklearn.no_such_module", "Thing") is None
    assert defined_class("sklearn.pipeline", "NoSuchName") is None
    assert defined_class("sklearn.pipeline", "not an identifier") is None


@pytest.mark.parametrize(
    ("prefix", "rest", "binds"),
    [
        ("", " = 1", True),
        ("", ": int = 1", True),
        ("", ": int", False),  # a bare annotation binds nothing at run time
        ("", ", b = f()", True),
        ("a, ", " = f()", True),
        ("(a, ", ") = f()", True),
        ("for ", " in x:", True),
        ("for a, ", " in x:", True),
        ("with f() as ", ":", True),
        ("    ", " += 1", True),
        ("del ", "", True),
        ("", " := 3", True),
        ("", "(x)", False),
        ("", ".foo = 1", False),
        ("    ", " : A table of data", False),  # numpydoc "See Also" lines
        ("x = ", "(1)", False),
        ("    ", ", Series : objects", False),
        ("", " == 3", False),
        ("        original, such as ", ".to_frame()", False),  # prose, not "with ... as"
        ("        (", "([1, 2], dtype='int64'),", False),  # a call with a keyword argument
        ("except ValueError as ", ":", True),
    ],
)
def test_what_counts_as_rebinding(prefix: str, rest: str, binds: bool) -> None:
    from sealml.models.sources import _rebinds

    assert _rebinds(prefix, rest) is binds


def test_a_rebound_class_is_left_to_the_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "sklearn_fake"
    package.mkdir()
    (package / "__init__.py").write_text(
        "class Kept:\n    pass\n\n\nclass Swapped:\n    pass\n\n\nSwapped, other = print, 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from sealml.models import sources

    assert sources._locate("sklearn_fake", "Kept", 0) == ("class", "sklearn_fake")
    assert sources._locate("sklearn_fake", "Swapped", 0) is None


def test_listed_pandas_classes_are_what_their_sources_say() -> None:
    """The allowlist names pandas' data structures outright; each must be a class defined
    where the list says, as the source judgement would find."""
    from sealml.models.allowlist import PANDAS_CLASSES
    from sealml.models.sources import _locate

    for name, defined_in in PANDAS_CLASSES.items():
        assert _locate("pandas", name, 0) == ("class", defined_in), name
        assert in_class_package(defined_in)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("pandas.api.typing", "StataReader"),  # ``__module__`` says pandas.api.typing
        ("pandas.api.typing", "JsonReader"),
        ("pandas.api.typing", "SASReader"),
        ("pandas._libs.parsers", "TextReader"),  # compiled: judged by its module
        ("pandas", "HDFStore"),
    ],
)
def test_file_readers_are_refused_however_they_are_named(module: str, name: str) -> None:
    import pandas  # noqa: F401 - loaded, as in any process that uses pandas

    from sealml.models.allowlist import judge

    assert judge(module, name) is not None
