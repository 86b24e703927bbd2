"""Known vulnerabilities of Python packages, from an offline copy of the OSV database.

The OSV project publishes each ecosystem's advisories as one zip of JSON records (for
PyPI, ``https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip``); a folder of
such records works too, so an air-gapped site can mirror it. Nothing is fetched here.

A package version is affected by a record when the record lists it among ``versions`` or
when one of its ``ECOSYSTEM`` ranges includes it, evaluated as the OSV schema specifies:
the range's events sorted by version, ``introduced`` opening an affected interval
(``"0"`` meaning from the start), ``fixed`` closing it at that version and
``last_affected`` just after it. Versions compare as PEP 440 (``packaging``). A bound that
is not a PEP 440 version is reported as affecting (a record that cannot be evaluated is
never taken as clean). Withdrawn records are skipped.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..errors import UsageError

ECOSYSTEM = "PyPI"
MAX_RECORD_BYTES = 4 << 20  # a record is a few KiB; anything far larger is not one
MAX_RECORDS = 1_000_000


@dataclass(frozen=True)
class Finding:
    """One advisory that affects one package version."""

    package: str
    version: str
    advisory: str
    aliases: tuple[str, ...]
    summary: str
    fixed: tuple[str, ...]  # versions that fix it, where the record names any
    evaluated: bool = True  # False: a bound was not PEP 440, reported to be safe

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "advisory": self.advisory,
            "aliases": list(self.aliases),
            "summary": self.summary,
            "fixed": list(self.fixed),
            "evaluated": self.evaluated,
        }


class _UnreadableBoundError(Exception):
    """A range bound that is not a PEP 440 version."""


@dataclass(frozen=True)
class AdvisoryDatabase:
    """The PyPI records of an OSV copy, by canonical package name."""

    source: str
    sha256: str  # of the zip file, or of the folder's record names and contents
    records: int
    by_package: Mapping[str, tuple[Mapping[str, Any], ...]]

    @classmethod
    def load(cls, path: Path) -> AdvisoryDatabase:
        """Read an OSV zip or folder; malformed input is a UsageError naming the record."""
        if not path.exists():
            raise UsageError(f"{path} does not exist")
        if path.is_dir():
            texts = _folder_records(path)
        elif zipfile.is_zipfile(path):
            texts = _zip_records(path)
        else:
            raise UsageError(f"{path} is neither an OSV zip nor a folder of OSV records")
        folder = hashlib.sha256()  # a zip is named by its file's digest instead
        index: dict[str, list[Mapping[str, Any]]] = {}
        count = 0
        for name, data in texts:
            if path.is_dir():
                folder.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            count += 1
            if count > MAX_RECORDS:
                raise UsageError(f"{path} holds more than {MAX_RECORDS} records")
            record = _parse(name, data)
            if record.get("withdrawn"):
                continue
            for package in {_package_name(entry) for entry in record.get("affected", [])}:
                if package:
                    index.setdefault(package, []).append(record)
        if path.is_dir():
            digest = folder
        else:
            with path.open("rb") as copy:
                digest = hashlib.file_digest(copy, "sha256")
        return cls(
            str(path),
            digest.hexdigest(),
            count,
            {name: tuple(records) for name, records in index.items()},
        )

    def findings(self, packages: Mapping[str, str]) -> list[Finding]:
        """Every advisory affecting the given ``name → version`` packages."""
        found: list[Finding] = []
        for raw_name, raw_version in sorted(packages.items()):
            name = canonicalize_name(raw_name)
            for record in self.by_package.get(name, ()):
                verdict = _affects(record, name, str(raw_version))
                if verdict is not None:
                    found.append(_finding(record, name, str(raw_version), verdict))
        return found


def _folder_records(folder: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(folder.rglob("*.json")):
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise UsageError(f"OSV record {path.name} is larger than {MAX_RECORD_BYTES} bytes")
        yield str(path.relative_to(folder)), path.read_bytes()


def _zip_records(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if info.is_dir() or not info.filename.endswith(".json"):
                    continue
                if info.file_size > MAX_RECORD_BYTES:
                    raise UsageError(
                        f"OSV record {info.filename} is larger than {MAX_RECORD_BYTES} bytes"
                    )
                with archive.open(info) as member:  # the size is checked as it is read too
                    data = member.read(MAX_RECORD_BYTES + 1)
                if len(data) > MAX_RECORD_BYTES:
                    raise UsageError(f"OSV record {info.filename} is larger than it claims")
                yield info.filename, data
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise UsageError(f"{path} is a damaged zip: {error}") from None


def _parse(name: str, data: bytes) -> Mapping[str, Any]:
    try:
        record = json.loads(data)
    except ValueError:
        raise UsageError(f"OSV record {name} is not valid JSON") from None
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise UsageError(f"OSV record {name} has no id")
    problem = _shape_problem(record)
    if problem:
        raise UsageError(f"OSV record {name} is malformed: {problem}")
    return record


def _shape_problem(record: Mapping[str, Any]) -> str | None:
    """What in *record* does not have the OSV schema's shape (the parts read here)."""
    affected = record.get("affected", [])
    if not isinstance(affected, list) or not all(isinstance(e, dict) for e in affected):
        return "affected is not a list of objects"
    for entry in affected:
        if not isinstance(entry.get("package", {}), dict):
            return "a package is not an object"
        if not isinstance(entry.get("versions", []), list):
            return "versions is not a list"
        spans = entry.get("ranges", [])
        if not isinstance(spans, list) or not all(isinstance(r, dict) for r in spans):
            return "ranges is not a list of objects"
        for span in spans:
            events = span.get("events", [])
            if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
                return "events is not a list of objects"
    return None


def _package_name(entry: Mapping[str, Any]) -> str | None:
    """The canonical name of the PyPI package an ``affected`` entry is about, if it is."""
    package = entry.get("package", {})
    if package.get("ecosystem") != ECOSYSTEM or not package.get("name"):
        return None
    return canonicalize_name(str(package["name"]))


def _entries(record: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    """The ``affected`` entries of *record* about the PyPI package *name*."""
    return [entry for entry in record.get("affected", []) if _package_name(entry) == name]


def _affects(record: Mapping[str, Any], name: str, version: str) -> bool | None:
    """True when *record* affects *name* at *version*, False when it could not be
    evaluated (reported as affecting), None when it does not affect it."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    unreadable = False
    for entry in _entries(record, name):
        try:
            if _listed(parsed, entry.get("versions", [])):
                return True
            for span in entry.get("ranges", []):
                if span.get("type") == "ECOSYSTEM" and _in_range(parsed, span.get("events")):
                    return True
        except _UnreadableBoundError:
            unreadable = True
    return False if unreadable else None


def _listed(version: Version, versions: Any) -> bool:
    for listed in versions:
        try:
            if Version(str(listed)) == version:
                return True
        except InvalidVersion:
            continue  # a listed version that is not PEP 440 is not this one
    return False


def _bound(text: Any) -> Version:
    try:
        return Version(str(text))
    except InvalidVersion:
        raise _UnreadableBoundError from None


def _in_range(version: Version, events: Any) -> bool:
    """The OSV evaluation of one range's events for *version*."""
    steps: list[tuple[Version | None, str]] = []
    for event in events or ():
        if not isinstance(event, dict) or len(event) != 1:
            raise _UnreadableBoundError
        ((kind, value),) = event.items()
        if kind == "introduced":
            steps.append((None if str(value) == "0" else _bound(value), kind))
        elif kind in ("fixed", "last_affected", "limit"):
            steps.append((_bound(value), kind))
        else:
            raise _UnreadableBoundError
    # "0" sorts first; at an equal version an interval closes before the next opens.
    steps.sort(key=lambda s: (s[0] is not None, s[0] or Version("0"), s[1] == "introduced"))
    affected = False
    for bound, kind in steps:
        if kind == "introduced" and (bound is None or version >= bound):
            affected = True
        elif (kind in ("fixed", "limit") and bound is not None and version >= bound) or (
            kind == "last_affected" and bound is not None and version > bound
        ):
            affected = False
    return affected


def _finding(record: Mapping[str, Any], name: str, version: str, evaluated: bool) -> Finding:
    fixed = sorted(
        {
            str(event["fixed"])
            for entry in _entries(record, name)
            for span in entry.get("ranges", [])
            for event in span.get("events", [])
            if "fixed" in event
        }
    )
    aliases = record.get("aliases")
    return Finding(
        package=name,
        version=version,
        advisory=str(record["id"]),
        aliases=tuple(str(a) for a in aliases) if isinstance(aliases, list) else (),
        summary=str(record.get("summary") or record.get("details") or "")[:200],
        fixed=tuple(fixed),
        evaluated=evaluated,
    )
