"""Roles and permissions.

A permission is ``area:verb`` (``dataset:read``, ``keys:admin``). A role grants a list of
permission patterns; ``*`` matches everything and ``area:*`` every verb of an area. The
mapping lives in ``sealml.toml`` under ``[access.roles]``; these are its defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..errors import UsageError

ARTIFACT_KINDS = ("dataset", "model", "report", "other", "attestation", "vault")

DEFAULT_ROLES: dict[str, list[str]] = {
    "admin": ["*"],
    "data-steward": [
        "dataset:*",
        "report:*",
        "other:*",
        "attestation:*",
        "vault:*",
        "pipeline:run",
        "artifact:verify",
        "keys:shred",
        "pii:reveal",
        "audit:read",
    ],
    "data-scientist": [
        "dataset:read",
        "model:read",
        "model:write",
        "report:read",
        "report:write",
        "other:read",
        "other:write",
        "attestation:read",
        "attestation:write",
        "vault:write",
        "artifact:verify",
        "pipeline:run",
        "registry:read",
        "registry:register",
        "registry:approve",
    ],
    "ml-engineer": [
        "dataset:read",
        "model:*",
        "report:read",
        "report:write",
        "other:read",
        "other:write",
        "attestation:read",
        "attestation:write",
        "vault:write",
        "artifact:verify",
        "pipeline:run",
        "registry:*",
    ],
    "auditor": [
        "audit:read",
        "audit:verify",
        "artifact:verify",
        "attestation:read",
        "user:read",
        "registry:read",
    ],
    "service": [
        "model:read",
        "model:serve",
        "report:write",
        "dataset:write",
        "registry:read",
        "registry:freeze",
    ],
}


def _matches(pattern: str, permission: str) -> bool:
    if pattern in ("*", permission):
        return True
    if pattern.endswith(":*"):
        return permission.split(":", 1)[0] == pattern[:-2]
    return False


class Policy:
    """The role → permission mapping in force for a workspace."""

    def __init__(self, roles: Mapping[str, Iterable[str]]) -> None:
        self.roles = {name: tuple(patterns) for name, patterns in roles.items()}

    def known(self, role: str) -> bool:
        return role in self.roles

    def check_assignable(self, roles: Iterable[str]) -> None:
        """Raise UsageError unless *roles* is a non-empty list of roles this policy knows."""
        given = list(roles)
        unknown = [r for r in given if not self.known(r)]
        if unknown:
            raise UsageError(
                f"unknown role {unknown[0]!r}; roles are {', '.join(sorted(self.roles))}"
            )
        if not given:
            raise UsageError("a principal needs at least one role")

    def allows(self, roles: Iterable[str], permission: str) -> bool:
        """True when any of *roles* grants *permission*."""
        return any(
            _matches(pattern, permission) for role in roles for pattern in self.roles.get(role, ())
        )
