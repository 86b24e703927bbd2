"""The ``workspace_meta`` key/value table: small records the workspace keeps by name."""

from __future__ import annotations

from sqlalchemy.orm import Session

from .models import MetaEntry
from .raw import select_one


def read_meta(session: Session, key: str) -> str | None:
    """The value stored under *key*, None when there is none."""
    entry = select_one(session, MetaEntry, "key = ?", (key,))
    return None if entry is None else entry.value


def write_meta(session: Session, key: str, value: str) -> None:
    """Store *value* under *key* in this transaction, replacing any value before."""
    entry = session.get(MetaEntry, key)
    if entry is None:
        session.add(MetaEntry(key=key, value=value))
    else:
        entry.value = value
    session.flush()
