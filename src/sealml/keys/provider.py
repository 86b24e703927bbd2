"""The key provider interface: where key-encryption keys (KEKs) live and how DEKs are wrapped.

A provider never hands out a KEK; it wraps and unwraps data keys (DEKs). Every wrapped DEK
names the KEK version that wrapped it, so rotation can re-wrap DEKs one by one while the
sealed bodies stay untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

DEK_SIZE = 32


@dataclass(frozen=True)
class WrappedKey:
    """A DEK encrypted under the KEK named *kek_id* (e.g. ``local:3``)."""

    kek_id: str
    blob: bytes

    def __repr__(self) -> str:
        return f"WrappedKey({self.kek_id}, {len(self.blob)} bytes)"


class KeyProvider(Protocol):
    """What every key provider (local keystore, PKCS#11 token) offers."""

    name: str

    def current_kek_id(self) -> str:
        """The KEK that wraps new data keys."""
        ...

    def kek_ids(self) -> list[str]:
        """Every KEK still held, oldest first."""
        ...

    def wrap(self, dek: bytes, context: bytes) -> WrappedKey:
        """Encrypt *dek* under the current KEK, bound to *context*."""
        ...

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        """Recover a DEK; raises IntegrityError if it does not authenticate."""
        ...

    def rotate(self) -> str:
        """Create a new KEK version, make it current and return its id."""
        ...

    def destroy(self, kek_ids: list[str]) -> None:
        """Irrecoverably delete the named (non-current) KEKs."""
        ...

    def refresh(self) -> None:
        """Pick up what another process changed since this one opened the provider (a
        rotation's new KEK; KEKs it destroyed), so that nothing new is wrapped under a KEK
        that is gone."""
        ...


@dataclass(frozen=True)
class DataKeyRecord:
    """One stored wrapped DEK and the artifact it belongs to."""

    artifact_id: str
    wrapped: WrappedKey


class DataKeyRepository(Protocol):
    """Where wrapped DEKs are stored (the metadata database, in practice)."""

    def iter_wrapped(self) -> Iterator[DataKeyRecord]:
        """Every wrapped DEK still held."""
        ...

    def replace(self, record: DataKeyRecord) -> None:
        """Store a re-wrapped DEK for the same artifact."""
        ...


def dek_context(artifact_id: str) -> bytes:
    """The wrapping context of an artifact's DEK: a wrapped key moved to another artifact
    fails to unwrap."""
    return b"sealml/dek/v1:" + artifact_id.encode("ascii")


def rewrap_all(provider: KeyProvider, repository: DataKeyRepository) -> int:
    """Re-wrap every DEK not yet under the current KEK; returns how many changed."""
    current = provider.current_kek_id()
    changed = 0
    for record in list(repository.iter_wrapped()):
        if record.wrapped.kek_id == current:
            continue
        context = dek_context(record.artifact_id)
        dek = provider.unwrap(record.wrapped, context)
        repository.replace(DataKeyRecord(record.artifact_id, provider.wrap(dek, context)))
        changed += 1
    return changed


class MigratedProvider:
    """A provider that took over from an earlier one (``sealml keys migrate``).

    The new provider wraps, rotates and destroys. A data key still wrapped under one of the
    earlier provider's KEKs (ids starting with *earlier_prefix*: the migration was
    interrupted, or a process that had not seen it sealed meanwhile) unwraps there, so no
    state a migration passes through leaves an artifact unreadable.
    """

    def __init__(
        self, current: KeyProvider, earlier: Callable[[], KeyProvider], earlier_prefix: str
    ) -> None:
        self.current = current
        self.name = current.name
        self._earlier = earlier
        self._earlier_prefix = earlier_prefix

    def __repr__(self) -> str:
        return f"MigratedProvider({self.current!r})"

    def current_kek_id(self) -> str:
        return self.current.current_kek_id()

    def kek_ids(self) -> list[str]:
        return self.current.kek_ids()

    def wrap(self, dek: bytes, context: bytes) -> WrappedKey:
        return self.current.wrap(dek, context)

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        if wrapped.kek_id.startswith(self._earlier_prefix):
            return self._earlier().unwrap(wrapped, context)
        return self.current.unwrap(wrapped, context)

    def rotate(self) -> str:
        return self.current.rotate()

    def destroy(self, kek_ids: list[str]) -> None:
        self.current.destroy(kek_ids)

    def refresh(self) -> None:
        self.current.refresh()
