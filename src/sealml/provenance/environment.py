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
    packages = {str(h["Name"]).lower(): str(h["Version"]) for h in installed_headers()}
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "packages": dict(sorted(packages.items())),
    }


@functools.cache
def installed_headers() -> tuple[Message, ...]:
    """The metadata headers of every installed distribution with a name and version, in
    ``sys.path`` order (read once per process)."""
    found = []
    for dist in metadata.distributions():
        headers = _metadata_headers(dist)
        if headers is not None and headers["Name"] and headers["Version"]:
            found.append(headers)
    return tuple(found)


def _metadata_headers(dist: metadata.Distribution) -> Message | None:
    """The header block of a distribution's metadata only: ``dist.metadata`` parses the
    whole file, long description included, which for a few hundred packages costs a
    second."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    if not text:
        return None
    return HeaderParser().parsestr(text.split("\n\n", 1)[0])
