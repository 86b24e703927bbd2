"""The error types every layer raises, each mapped to a documented CLI exit code.

Exit codes: 0 success, 1 a failed check (tamper, bad signature, broken ledger),
2 bad input (usage, unknown artifact, wrong passphrase or password, permission denied).
Messages are single lines and never contain secret material.
"""

from __future__ import annotations


class SealmlError(Exception):
    """Base class for every error sealml reports to a user."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SealmlError):
    """The request itself is wrong: bad option, bad path, malformed file."""


class NotFoundError(SealmlError):
    """An artifact, principal, event or workspace that does not exist."""


class ConfigError(SealmlError):
    """sealml.toml is missing, malformed or inconsistent."""


class WorkspaceExistsError(SealmlError):
    """`init` refuses to overwrite an existing workspace."""


class AuthenticationError(SealmlError):
    """Wrong passphrase, wrong password, expired or unknown session, disabled principal."""


class PermissionDeniedError(SealmlError):
    """authorize() refused the request (the denial is audited)."""


class ShreddedError(SealmlError):
    """The artifact's data key was destroyed: its content can never be recovered."""


class IntegrityError(SealmlError):
    """Stored data failed verification: tamper, truncation, forgery, rollback."""

    exit_code = 1
