"""The build environment recorded in provenance: Python and installed package versions."""

from __future__ import annotations

import functools
import platform
import sys
from email.message import Message
from email.parser import HeaderParser
from importlib import metadata


@functools.cache
def environment() -> dict[str, object]:
    """Interpreter, platform and every installed distribution with its version."""
    packages = {}
    for dist in metadata.distributions():
        found = _name_and_version(dist)
        if found is not None:
            packages[found[0].lower()] = found[1]
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "packages": dict(sorted(packages.items())),
    }


def metadata_headers(dist: metadata.Distribution) -> Message | None:
    """The header block of a distribution's metadata only: ``dist.metadata`` parses the
    whole file, long description included, which for a few hundred packages costs a
    second."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    if not text:
        return None
    return HeaderParser().parsestr(text.split("\n\n", 1)[0])


def _name_and_version(dist: metadata.Distribution) -> tuple[str, str] | None:
    headers = metadata_headers(dist)
    if headers is None:
        return None
    name, version = headers["Name"], headers["Version"]
    return (str(name), str(version)) if name and version else None
