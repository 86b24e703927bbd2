"""The build environment recorded in provenance: Python and installed package versions."""

from __future__ import annotations

import functools
import platform
import sys
from importlib import metadata


@functools.cache
def environment() -> dict[str, object]:
    """Interpreter, platform and every installed distribution with its version."""
    packages = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name.lower()] = dist.version
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "packages": dict(sorted(packages.items())),
    }
