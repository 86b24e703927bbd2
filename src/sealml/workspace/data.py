"""Data operations that need the workspace: reading datasets, PII keys, the token vault."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from ..crypto.canonical import canonical_json
from ..data.pseudonymise import VAULT_FORMAT
from ..data.tables import Limits, detect_format, parse_table, read_source
from ..errors import UsageError
from ..pipeline.codecs import PARQUET_MEDIA_TYPE, decode_dataset
from ..store.artifacts import info_of
from .lineage import LineageOperations

VAULT_PREFIX = "pii-vault/"


class DataOperations(LineageOperations):
    """Datasets as DataFrames, and the keys and vault behind pseudonyms and tokens."""

    def read_table(
        self,
        ref: str,
        *,
        fmt: str | None = None,
        encoding: str = "utf-8",
        limits: Limits | None = None,
    ) -> Any:
        """A dataset artifact (verified) as a DataFrame."""
        info = self.info(ref)
        data = self.read_bytes(info.id)
        if info.media_type == PARQUET_MEDIA_TYPE:
            try:
                return decode_dataset(data)
            except (ValueError, OSError) as error:
                message = f"{info.name} is not a readable dataset: {error}"
                raise UsageError(message.splitlines()[0]) from None
        kind = fmt or detect_format(info.name, info.media_type)
        return parse_table(data, kind, info.name, encoding=encoding, limits=limits)

    def seal_vault(self, name: str, tokens: dict[str, str], parents: list[str]) -> str:
        """Seal a token vault (token → original) as an artifact; returns its id."""
        body = canonical_json({"format": VAULT_FORMAT, "tokens": tokens})
        info = self.put(
            io.BytesIO(body),
            "vault",
            VAULT_PREFIX + name,
            media_type="application/json",
            parents=parents,
            annotations={"pii": "token-vault"},
        )
        return info.id

    def reveal(self, tokens: list[str], vault_ref: str) -> dict[str, str | None]:
        """Originals of *tokens* (needs ``pii:reveal``; every reveal is audited)."""
        with self.db.read() as session:
            row, _ = self._load_checked(session, vault_ref)
        if row.kind != "vault":
            raise UsageError(f"{vault_ref} is not a token vault")
        data = self.read_bytes(row.id, permission="pii:reveal", action="pii.reveal")
        try:
            document = json.loads(data)
            if document.get("format") != VAULT_FORMAT:
                raise ValueError
            vault = document["tokens"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(f"{vault_ref} is not a readable token vault") from None
        info = info_of(row)
        found = {token: vault.get(token) for token in tokens}
        self.record(
            [
                self.event(
                    "pii.reveal",
                    f"artifact:{info.id}",
                    tokens=len(tokens),
                    revealed=sum(v is not None for v in found.values()),
                )
            ]
        )
        return found


def read_local_table(
    path: Path, *, fmt: str | None = None, encoding: str = "utf-8", limits: Limits | None = None
) -> Any:
    """A local file as a DataFrame (no workspace involved)."""
    limits = limits or Limits()
    return parse_table(
        read_source(path, limits),
        fmt or detect_format(path.name),
        str(path),
        encoding=encoding,
        limits=limits,
    )
