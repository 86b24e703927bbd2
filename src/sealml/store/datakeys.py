"""The database side of envelope encryption: wrapped data keys as rows."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import DataKeyRow
from ..keys.provider import DataKeyRecord, WrappedKey


class DatabaseDataKeys:
    """A :class:`~sealml.keys.provider.DataKeyRepository` over the ``data_keys`` table."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def iter_wrapped(self) -> Iterator[DataKeyRecord]:
        rows = self._session.execute(select(DataKeyRow).order_by(DataKeyRow.artifact_id))
        for row in rows.scalars():
            yield DataKeyRecord(row.artifact_id, WrappedKey(row.kek_id, row.wrapped))

    def replace(self, record: DataKeyRecord) -> None:
        row = self._session.get(DataKeyRow, record.artifact_id)
        if row is None:
            raise KeyError(record.artifact_id)
        row.kek_id = record.wrapped.kek_id
        row.wrapped = record.wrapped.blob
