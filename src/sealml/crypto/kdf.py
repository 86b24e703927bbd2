"""Argon2id key derivation from passphrases and passwords."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from argon2.low_level import Type, hash_secret_raw

from .secret import Secret

# Bounds on parameters read back from files, so a tampered file cannot ask for a KDF that
# never finishes or exhausts memory.
_MAX_MEMORY_KIB = 4 * 1024 * 1024
_MAX_TIME_COST = 64
_MAX_PARALLELISM = 16


@dataclass(frozen=True)
class Argon2idParams:
    """Argon2id cost parameters (RFC 9106); memory in KiB."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 2

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Argon2idParams:
        """Parse and bound-check parameters read from a file."""
        try:
            params = cls(
                time_cost=int(data["time_cost"]),
                memory_kib=int(data["memory_kib"]),
                parallelism=int(data["parallelism"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError("malformed Argon2id parameters") from None
        if not (
            1 <= params.time_cost <= _MAX_TIME_COST
            and 8 * params.parallelism <= params.memory_kib <= _MAX_MEMORY_KIB
            and 1 <= params.parallelism <= _MAX_PARALLELISM
        ):
            raise ValueError("Argon2id parameters out of bounds")
        return params


# RFC 9106's second recommended option is 64 MiB; this is the default for keystores and
# principal keys. The fast profile exists for tests and throwaway demo workspaces only.
DEFAULT_PARAMS = Argon2idParams()
FAST_PARAMS = Argon2idParams(time_cost=1, memory_kib=1024, parallelism=1)

SALT_SIZE = 16


def new_salt() -> bytes:
    """A fresh random salt."""
    return os.urandom(SALT_SIZE)


def derive_key(secret: Secret, salt: bytes, params: Argon2idParams, length: int = 32) -> bytes:
    """Derive a *length*-byte key from *secret* with Argon2id."""
    return hash_secret_raw(
        secret=secret.reveal(),
        salt=salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=length,
        type=Type.ID,
    )
