"""Acting on personal data: drop, mask, keyed pseudonyms, reversible tokens, generalisation,
and the k-anonymity / l-diversity report with suppression.

Keyed pseudonyms are ``HMAC-SHA256(workspace key, value)``: the same value gives the same
pseudonym in every table and run (joins still work), and without the key they cannot be
linked back or recomputed. Reversible tokens are derived the same way under a separate key
and their originals kept in a vault that is sealed like any artifact; revealing a token
needs the ``pii:reveal`` permission and is audited.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UsageError

VAULT_FORMAT = "sealml-token-vault/1"

Action = Literal["drop", "mask", "pseudonym", "tokenise", "generalise", "keep"]


class ColumnAction(BaseModel):
    """What to do with one column."""

    model_config = ConfigDict(extra="forbid")
    action: Action
    keep_last: int = Field(default=4, ge=0, le=64)
    band: float | None = Field(default=None, gt=0)
    prefix: int | None = Field(default=None, ge=0, le=64)
    granularity: Literal["year", "month"] = "month"


def parse_actions(data: Any, what: str = "actions") -> dict[str, ColumnAction]:
    """Validate an actions declaration ``{column: {action: ...}}``."""
    if not isinstance(data, dict):
        raise UsageError(f"{what}: expected a mapping of column → action")
    actions = {}
    for column, spec in data.items():
        try:
            actions[str(column)] = ColumnAction.model_validate(
                {"action": spec} if isinstance(spec, str) else spec
            )
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UsageError(f"{what}: {column}: {where}: {first['msg']}") from None
    return actions


def _token(key: bytes, value: Any, prefix: str) -> str:
    digest = hmac.new(key, str(value).encode("utf-8"), sha256).digest()
    return prefix + base64.b32encode(digest[:15]).decode().lower()


def pseudonym(key: bytes, value: Any) -> str:
    """The keyed pseudonym of a value (stable, unlinkable without the key)."""
    return _token(key, value, "pn_")


def _mask(value: Any, keep_last: int) -> str:
    text = str(value)
    if "@" in text:
        local, _, domain = text.partition("@")
        return local[:1] + "*" * max(len(local) - 1, 1) + "@" + domain
    keep = min(keep_last, max(len(text) - 1, 0))
    hidden = len(text) - keep
    return "".join("*" if c.isalnum() else c for c in text[:hidden]) + text[hidden:]


def _generalise(series: Any, spec: ColumnAction) -> Any:
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series):
        width = spec.band or 10
        lower = (series // width) * width
        upper = lower + width - (1 if float(width).is_integer() else 0)
        text = lower.map(lambda v: f"{v:g}") + "-" + upper.map(lambda v: f"{v:g}")
        return text.where(series.notna())
    dates = pd.to_datetime(series, errors="coerce")
    if len(series) and dates.notna().mean() > 0.9:
        pattern = "%Y-%m" if spec.granularity == "month" else "%Y"
        return dates.dt.strftime(pattern).where(dates.notna())
    length = spec.prefix if spec.prefix is not None else 3
    return series.map(lambda v: v if v is None or v != v else str(v)[:length] + "*")


@dataclass
class Applied:
    """The transformed frame and what was done (for the sealed report)."""

    frame: Any
    actions: dict[str, str]
    vault: dict[str, str] = field(default_factory=dict)


def apply_actions(
    frame: Any, actions: dict[str, ColumnAction], *, pseudonym_key: bytes, token_key: bytes
) -> Applied:
    """Apply *actions*; tokens' originals are returned in ``vault`` for sealing."""
    missing = [c for c in actions if c not in frame.columns]
    if missing:
        raise UsageError(f"no column {missing[0]!r} to act on")
    out = frame.copy()
    vault: dict[str, str] = {}
    done: dict[str, str] = {}
    for column, spec in actions.items():
        series = out[column]
        present = series.notna()
        if spec.action == "drop":
            out = out.drop(columns=[column])
        elif spec.action == "mask":
            out[column] = series.map(lambda v, n=spec.keep_last: _mask(v, n)).where(present)
        elif spec.action == "pseudonym":
            out[column] = series.map(lambda v: pseudonym(pseudonym_key, v)).where(present)
        elif spec.action == "tokenise":
            tokens = series.map(lambda v: _token(token_key, v, "tk_"))
            for token, original in zip(tokens[present], series[present], strict=True):
                vault[token] = str(original)
            out[column] = tokens.where(present)
        elif spec.action == "generalise":
            out[column] = _generalise(series, spec)
        done[column] = spec.action
    return Applied(out, done, vault)


@dataclass
class AnonymityReport:
    """k-anonymity and l-diversity over declared quasi-identifiers."""

    quasi_identifiers: list[str]
    k: int
    classes: int
    rows: int
    l_diversity: int | None
    suppressed: int = 0
    target_k: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def anonymity(
    frame: Any, quasi: list[str], sensitive: str | None = None, target_k: int | None = None
) -> tuple[AnonymityReport, Any]:
    """Report k (smallest equivalence class) and l (fewest distinct sensitive values in a
    class); with *target_k*, suppress the rows of smaller classes. Returns the report and
    the (possibly suppressed) frame."""
    missing = [c for c in [*quasi, *([sensitive] if sensitive else [])] if c not in frame.columns]
    if missing:
        raise UsageError(f"no column {missing[0]!r} for the anonymity report")
    if not quasi:
        raise UsageError("give at least one quasi-identifier")
    keyed = frame[quasi].astype("string").fillna("<missing>")
    sizes = keyed.groupby(quasi, dropna=False).transform("size") if len(quasi) > 1 else None
    if sizes is None:
        sizes = keyed.groupby(quasi[0], dropna=False)[quasi[0]].transform("size")
    else:
        sizes = sizes.iloc[:, 0] if hasattr(sizes, "columns") else sizes
    suppressed = 0
    kept = frame
    if target_k is not None:
        mask = sizes >= target_k
        suppressed = int((~mask).sum())
        kept = frame[mask]
        keyed = keyed[mask]
        sizes = sizes[mask]
    groups = keyed.groupby(quasi, dropna=False)
    l_value = None
    if sensitive is not None and len(kept):
        l_value = int(
            kept.groupby([keyed[c] for c in quasi], dropna=False)[sensitive].nunique().min()
        )
    report = AnonymityReport(
        quasi_identifiers=list(quasi),
        k=int(sizes.min()) if len(sizes) else 0,
        classes=int(groups.ngroups),
        rows=len(kept),
        l_diversity=l_value,
        suppressed=suppressed,
        target_k=target_k,
    )
    return report, kept
