"""Where a name in an installed package is really defined, read from source without
importing anything.

The scanner must know whether ``sklearn.ensemble._forest.RandomForestClassifier`` is a
class and where it is defined (a re-export is judged by its origin). Importing the module
answers that but costs seconds for scikit-learn, SciPy and pandas; reading the module's
source answers the usual cases in well under a millisecond: a ``class`` statement at the
start of a line, or a ``from ... import`` at the start of a line to follow. The source is
searched line-wise rather than parsed (parsing pandas' ``frame.py`` alone takes 30 ms), so
the answer is given only when it is unambiguous: a name that is also assigned, imported
inside a block, or defined twice, and any module with a module-level ``__getattr__`` or
compiled code, are left open (None) and the caller imports.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re

MAX_HOPS = 8


def defined_class(module: str, name: str) -> bool | None:
    """True when *name* is a class defined by a module in the same set of class packages,
    False when the source shows it is not a class, None when the source cannot tell."""
    from .allowlist import in_class_package

    found = _locate(module, name, 0)
    if found is None:
        return None
    kind, origin = found
    return kind == "class" and in_class_package(origin)


def _locate(module: str, name: str, hops: int) -> tuple[str, str] | None:
    if hops > MAX_HOPS or not name.isidentifier():
        return None
    text = _text(module)
    if text is None:
        return None
    classes = functions = 0
    maybe_imported = False
    for prefix, rest in _uses(text, name):
        if prefix.rstrip(" \t") == "class" and prefix[:1] == "c":
            classes += 1
        elif prefix.rstrip(" \t") in ("def", "async def") and prefix[:1] in ("d", "a"):
            functions += 1
        elif prefix[:1] in (" ", "\t") and "import" in prefix and _binds(prefix, rest):
            return None  # imported inside a block: only importing can tell
        elif "import" not in prefix and _rebinds(prefix, rest):
            return None  # (possibly) rebound somewhere: only importing can tell
        elif prefix.startswith("from ") or (
            not prefix.strip(" \t(") and rest.strip(" \t")[:1] in ("", ",", ")", "#", "a")
        ):
            maybe_imported = True  # a top-level import, or an item of a multi-line one
    # Parsing the imports costs more than the rest; skip it when no line could be one.
    needed = maybe_imported or not (classes or functions)
    imports = _imports(module) if needed else ()
    imported = [(origin, real) for origin, real, bound in imports if bound == name]
    if classes + functions + len(imported) > 1:
        return None
    if classes:
        return ("class", module)
    if functions:
        return ("other", module)
    if imported:
        origin, real = imported[0]
        return _locate(origin, real, hops + 1)
    if text.startswith("def __getattr__") or "\ndef __getattr__" in text:
        return None
    for origin, real, _ in imports:
        if real == "*":
            found = _locate(origin, name, hops + 1)
            if found is not None:
                return found
    return None


@functools.cache
def _text(module: str) -> str | None:
    found = _source_file(module)
    if found is None:
        return None
    try:
        with open(found[0], encoding="utf-8") as source:
            return source.read()
    except (OSError, UnicodeDecodeError):
        return None


@functools.cache
def _imports(module: str) -> tuple[tuple[str, str, str], ...]:
    """Every ``from X import a as b`` at the start of a line: (absolute X, a, b); ``*`` for
    star imports."""
    text = _text(module) or ""
    found: list[tuple[str, str, str]] = []
    position = 0 if text.startswith("from ") else text.find("\nfrom ")
    while position != -1:
        start = position + (text[position] == "\n")
        end = text.find("\n", start)
        end = len(text) if end == -1 else end
        head = text[start:end]
        if "(" in head and ")" not in head:
            end = text.find(")", start)
            end = len(text) if end == -1 else end
        while text[start:end].endswith("\\"):
            following = text.find("\n", end + 1)
            end = len(text) if following == -1 else following
        statement = text[start:end]
        clause, _, names = statement[5:].partition(" import ")
        origin = _absolute(module, clause.strip())
        if origin is not None:
            cleaned = "\n".join(line.split("#", 1)[0] for line in names.splitlines())
            for item in cleaned.replace("\\", " ").strip("() \n").split(","):
                parts = item.split()
                if len(parts) == 1:
                    found.append((origin, parts[0], parts[0]))
                elif len(parts) == 3 and parts[1] == "as":
                    found.append((origin, parts[0], parts[2]))
        position = text.find("\nfrom ", end)
    return tuple(found)


def _uses(text: str, name: str) -> list[tuple[str, str]]:
    """For every whole-word use of *name*: the text of its line before it and after it.
    (``str.find`` with a cheap neighbour test: a file can name a class thousands of times.)"""
    uses = []
    size = len(name)
    position = text.find(name)
    while position != -1:
        after = position + size
        # Only a use at the start of a line, after ``class``/``def``/``import``, or in an
        # import or target list can bind it: all follow a space, tab, newline, "(" or ",".
        before_char = text[position - 1] if position else "\n"
        after_char = text[after : after + 1]
        if before_char in " \t\n(," and not (after_char.isalnum() or after_char == "_"):
            start = text.rfind("\n", 0, position) + 1
            end = text.find("\n", after)
            uses.append((text[start:position], text[after : len(text) if end == -1 else end]))
        position = text.find(name, after)
    return uses


_TARGET_LIST = re.compile(r"[\w\s,()\[\]*.]*[,(\[]")
_REST_OF_TARGETS = re.compile(r"[\s\w,()\[\]*.]*=(?!=)")


def _rebinds(prefix: str, rest: str) -> bool:
    """Whether a use of a name (outside an import) may bind it: an assignment (plain,
    augmented, annotated with a value, or unpacking), a ``for``/``with``/``except`` target,
    a walrus, ``del`` or ``global``. Errs on the side of yes."""
    head = prefix.strip(" \t")
    tail = rest.lstrip(" \t")
    if tail[:1] in ("(", "[", "."):
        return False  # a call, subscript or attribute: the name itself is not a target
    if tail.startswith(":=") or head in ("del", "global"):
        return True
    if head.endswith(" as") or head == "as":  # with ... as NAME:, except ... as NAME:
        return tail[:1] in (":", ",", ")")
    if head.split(" ", 1)[0] == "for":
        return tail.startswith(("in ", ",", ")"))
    if not head:
        return _assigns(tail) or (tail[:1] == "," and bool(_REST_OF_TARGETS.match(tail)))
    return bool(_TARGET_LIST.fullmatch(head)) and bool(_REST_OF_TARGETS.match(tail))


def _assigns(rest: str) -> bool:
    """Whether what follows a name at the start of a line makes it an assignment target."""
    rest = rest.lstrip(" \t")
    if rest[:1] == "=":
        return rest[:2] != "=="
    if rest[:1] == ":":  # an annotation binds only with a value (``x: T = v``)
        value = rest.find("=")
        return value != -1 and rest[value : value + 2] != "=="
    return rest[:2] in ("+=", "-=", "*=", "/=", "|=", "&=")


def _binds(prefix: str, rest: str) -> bool:
    """Whether an import statement around a use of a name binds that name."""
    if not prefix.lstrip(" \t").startswith(("import ", "from ")):
        return False
    after = rest.lstrip(" \t")
    if after.startswith("as ") or after.startswith("as\t"):
        return False  # ``import NAME as other`` binds other
    return prefix.rstrip(" \t(").endswith(("import", ",", "as"))


def _absolute(module: str, clause: str) -> str | None:
    """The absolute module a ``from CLAUSE import`` in *module* refers to."""
    level = len(clause) - len(clause.lstrip("."))
    target = clause[level:]
    if level == 0:
        return target or None
    package = module if _is_package(module) else module.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 >= len(parts):
        return None
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{target}" if target else base


@functools.cache
def _package_folders(top: str) -> tuple[str, ...]:
    """Where a top-level package lives (``find_spec`` on a top-level name does not import)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return ()
    if spec is None or not spec.submodule_search_locations:
        return ()
    return tuple(spec.submodule_search_locations)


@functools.cache
def _source_file(module: str) -> tuple[str, bool] | None:
    """The ``.py`` file of *module* and whether it is a package, found without importing
    (plain strings rather than ``Path``: this runs for every class a scan meets)."""
    parts = module.split(".")
    folders = list(_package_folders(parts[0]))
    if not folders:
        return None
    join, is_file = os.path.join, os.path.isfile
    for part in parts[1:]:
        nested = [join(f, part) for f in folders if is_file(join(f, part, "__init__.py"))]
        if nested:
            folders = nested
            continue
        files = [join(f, f"{part}.py") for f in folders if is_file(join(f, f"{part}.py"))]
        if files and part == parts[-1]:
            return files[0], False
        return None
    init = join(folders[0], "__init__.py")
    return (init, True) if is_file(init) else None


def _is_package(module: str) -> bool:
    found = _source_file(module)
    return found is not None and found[1]
