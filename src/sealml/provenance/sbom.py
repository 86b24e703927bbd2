"""A CycloneDX SBOM of the Python environment a model was built in.

The package list comes from the training stage's signed provenance (what was installed
when the model was made), or, for a model sealml did not train, from the registering
process. Each package becomes a ``library`` component with its PyPI package URL; where the
same version is installed here, its declared licence and its dependencies on other listed
packages are added from the installed metadata. The model is the BOM's subject, a
``machine-learning-model`` named as registered, with its artifact id and SHA-256,
depending on every listed package.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .._version import __version__
from .environment import installed_headers

try:  # its home since cyclonedx-python-lib 11; the old path warns there
    from cyclonedx.contrib.license.factories import LicenseFactory
except ImportError:  # pragma: no cover - older releases
    from cyclonedx.factory.license import LicenseFactory

MEDIA_TYPE = "application/vnd.cyclonedx+json"
SCHEMA = SchemaVersion.V1_6
# Where a requirement's distribution name ends (PEP 508 names are [A-Za-z0-9._-]).
_NAME_END = re.compile(r"[^A-Za-z0-9._-]")
# A `License:` header longer than this is the licence's text, not its name.
_MAX_LICENSE_NAME = 80
_LICENSES = LicenseFactory()


@dataclass(frozen=True)
class SbomSubject:
    """The model an SBOM describes and where its package list came from."""

    name: str  # the registry name
    artifact_id: str
    sha256: str
    environment_source: str  # e.g. "provenance <attestation id>" or "registering process"


def environment_sbom(subject: SbomSubject, environment: Mapping[str, Any]) -> bytes:
    """The CycloneDX 1.6 JSON document for *subject* built in *environment* (the mapping
    provenance records: ``python``, ``platform``, ``packages`` name → version)."""
    packages: dict[str, str] = {
        canonicalize_name(str(name)): str(version)
        for name, version in dict(environment.get("packages") or {}).items()
    }
    installed = _installed(packages)
    components: dict[str, Component] = {
        name: _component(name, version, installed.get(name))
        for name, version in sorted(packages.items())
    }
    model = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=subject.name,
        bom_ref=f"model:{subject.name}:{subject.artifact_id}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=subject.sha256)],
        properties=[Property(name="sealml:artifact", value=subject.artifact_id)],
    )
    sealml_version = packages.get("sealml") or __version__
    bom = Bom(
        components=components.values(),
        metadata=BomMetaData(
            component=model,
            timestamp=datetime.now(UTC),
            tools=ToolRepository(
                components=[
                    Component(type=ComponentType.APPLICATION, name="sealml", version=sealml_version)
                ]
            ),
            properties=[
                Property(name="sealml:environment-source", value=subject.environment_source),
                Property(name="sealml:python", value=str(environment.get("python", ""))),
                Property(name="sealml:platform", value=str(environment.get("platform", ""))),
            ],
        ),
    )
    # Dependency entries are added directly: Bom.register_dependency searches the existing
    # ones linearly for each call (quadratic in the number of packages).
    bom.dependencies.add(_dependency(model, components.values()))
    for name, component in components.items():
        requires = [components[n] for n in _requires(installed.get(name), components)]
        bom.dependencies.add(_dependency(component, requires))
    return make_outputter(bom, OutputFormat.JSON, SCHEMA).output_as_string(indent=None).encode()


def model_sha256(document: bytes) -> str | None:
    """The SHA-256 an SBOM states for its model (None when it states none)."""
    try:
        hashes = json.loads(document)["metadata"]["component"]["hashes"]
        return next(str(h["content"]) for h in hashes if h.get("alg") == "SHA-256")
    except (ValueError, KeyError, TypeError, StopIteration):
        return None


def packages_in(document: bytes) -> dict[str, str]:
    """The ``name → version`` of every library component of an SBOM this module made."""
    try:
        components = json.loads(document).get("components") or []
        return {
            canonicalize_name(str(c["name"])): str(c["version"])
            for c in components
            if c.get("type") == "library" and c.get("version")
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def _installed(packages: Mapping[str, str]) -> dict[str, Any]:
    """Installed metadata headers of the listed packages, where the same version is here."""
    found: dict[str, Any] = {}
    for headers in installed_headers():
        name = canonicalize_name(str(headers["Name"]))
        if packages.get(name) == str(headers["Version"]) and name not in found:
            found[name] = headers
    return found


def _component(name: str, version: str, headers: Any) -> Component:
    purl = PackageURL(type="pypi", name=name, version=version)
    return Component(
        type=ComponentType.LIBRARY,
        name=name,
        version=version,
        purl=purl,
        bom_ref=purl.to_string(),
        licenses=_licenses(headers),
    )


def _licenses(headers: Any) -> list[Any]:
    if headers is None:
        return []
    declared = headers["License-Expression"] or headers["License"]
    if not declared:
        return []
    declared = str(declared).strip()
    if not declared or "\n" in declared or len(declared) > _MAX_LICENSE_NAME:
        return []
    return [_LICENSES.make_from_string(declared)]


def _dependency(component: Component, requires: Iterable[Component]) -> Dependency:
    return Dependency(component.bom_ref, [Dependency(c.bom_ref) for c in requires])


def _requires(headers: Any, listed: Mapping[str, Component]) -> list[str]:
    """The listed packages this one needs (extras not asked for are left out)."""
    if headers is None:
        return []
    needed: list[str] = []
    for line in headers.get_all("Requires-Dist") or []:
        # Only requirements naming a listed package are worth parsing in full.
        named = _NAME_END.split(str(line).lstrip(), maxsplit=1)[0]
        if canonicalize_name(named) not in listed:
            continue
        try:
            requirement = Requirement(str(line))
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in needed:
            needed.append(name)
    return needed
