"""Installed packages checked against the hashes their installer recorded.

Every wheel installation writes a ``RECORD`` file listing each installed file with its
SHA-256; a file changed since (a patched library, a planted ``.pth``-loaded module, an
edited model loader) no longer matches. This checks what is installed now against what
was installed, offline; it says nothing about whether the package was trustworthy when
installed (that is what hash-pinned requirements and provenance are for).
"""

from __future__ import annotations

import base64
import hashlib
import sys
from dataclasses import dataclass, field
from importlib import metadata

_CHUNK = 1 << 20


@dataclass
class InstalledReport:
    """What the check found."""

    distributions: int = 0
    files: int = 0
    changed: list[str] = field(default_factory=list)  # "package: path"
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.changed and not self.missing


def search_path() -> list[str]:
    """Where installed distributions are looked for (the interpreter's import path)."""
    return list(sys.path)


def verify_installed(path: list[str] | None = None) -> InstalledReport:
    """Hash every file each installed distribution's RECORD lists with a hash."""
    report = InstalledReport()
    seen: set[str] = set()
    for dist in metadata.distributions(path=path if path is not None else search_path()):
        name = str(dist.metadata["Name"] or "?")
        if name.lower() in seen:  # the first on the path is the one imported
            continue
        seen.add(name.lower())
        report.distributions += 1
        for entry in dist.files or []:
            if entry.hash is None or entry.hash.mode not in hashlib.algorithms_available:
                continue
            located = entry.locate()
            try:
                digest = _digest(str(located), entry.hash.mode)
            except FileNotFoundError:
                report.missing.append(f"{name}: {entry}")
                continue
            report.files += 1
            if digest != entry.hash.value:
                report.changed.append(f"{name}: {entry}")
    return report


def _digest(path: str, mode: str) -> str:
    hasher = hashlib.new(mode)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return base64.urlsafe_b64encode(hasher.digest()).rstrip(b"=").decode("ascii")
