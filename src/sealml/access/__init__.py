"""Principals, roles, authorize(), passwords and sessions."""

from .policy import ARTIFACT_KINDS, DEFAULT_ROLES, Policy
from .principals import Actor, Principal, PrincipalStore

__all__ = ["ARTIFACT_KINDS", "DEFAULT_ROLES", "Actor", "Policy", "Principal", "PrincipalStore"]
