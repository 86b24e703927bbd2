"""``sealml monitor run``: a registered version's live inputs (its sealed prediction logs,
or a dataset given) against its sealed reference sample."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..db.models import ArtifactRow
from ..errors import NotFoundError, UsageError
from ..models.registry import DRIFT_REPORT, check_model_name, model_resource
from ..pipeline import codecs
from ..store.artifacts import info_of
from .modelreports import ModelReportOperations

if TYPE_CHECKING:
    import pandas as pd

    from ..monitoring.drift import DriftReport, Mode

INPUT_PREFIX = "input."


@dataclass(frozen=True)
class MonitorRun:
    """One run: its report, the sealed report's id, and the data it looked at."""

    name: str
    version: int
    report: DriftReport
    report_id: str
    reference: pd.DataFrame
    current: pd.DataFrame


class MonitorOperations(ModelReportOperations):
    """Drift of a registered version's inputs and predictions against its reference."""

    def reference_sample(self, name: str, version: int) -> pd.DataFrame:
        """The sealed reference sample of ``name`` v*version* (verified)."""
        described = self.show_model(name, version)
        label = f"{name}@{version}"
        with self.db.read() as session:
            row = self._annotated_child(session, described.artifact_id, "dataset", reference=label)
            if row is not None:
                frame: pd.DataFrame = codecs.decode(
                    "dataset", self._plaintext_attested(session, row)
                )
                return frame
        raise NotFoundError(f"{label} has no reference sample (registered without training data)")

    def prediction_log(self, name: str, rows: int, within: float | None = None) -> pd.DataFrame:
        """The newest *rows* predictions servers logged for *name* (only those of the last
        *within* seconds, when given), inputs under their own names plus ``prediction``,
        read from the sealed logs."""
        import pandas as pd

        cutoff = (
            None if within is None else pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=within)
        )
        since = None if cutoff is None else cutoff.strftime("%Y-%m-%dT%H:%M:%S")
        parts = self._sealed_frames("predictions", name, rows, since=since)
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if cutoff is not None and len(frame):
            frame = frame[pd.to_datetime(frame["at"], utc=True) >= cutoff]
        if frame.empty:
            raise NotFoundError(f"no prediction logs for {name} in the window: serve it first, "
                                "or give --data")  # fmt: skip
        frame = frame.tail(rows)
        renamed = {c: c[len(INPUT_PREFIX) :] for c in frame.columns if c.startswith(INPUT_PREFIX)}
        return frame.rename(columns=renamed)[[*renamed.values(), "prediction"]]

    def add_labels(self, name: str, labels: pd.DataFrame) -> str:
        """Seal ground truth that arrived after serving: ``request_id`` and ``label``
        columns (the request ids servers returned and logged)."""
        missing = {"request_id", "label"} - set(labels.columns)
        if missing:
            raise UsageError(f"the labels need the columns {', '.join(sorted(missing))}")
        check_model_name(name)
        self.authorize("dataset:write", model_resource(name), action="monitor.labels")
        frame = labels[["request_id", "label"]].dropna()
        sealed = self.put(
            io.BytesIO(codecs.encode("dataset", frame.reset_index(drop=True), "labels")),
            "dataset",
            f"{name}-labels.parquet",
            media_type=codecs.CODECS["dataset"].media_type,
            annotations={"labels": name, "rows": str(len(frame))},
        )
        return sealed.id

    def _sealed_frames(
        self, annotation: str, name: str, rows: int | None = None, since: str | None = None
    ) -> list[pd.DataFrame]:
        """The sealed datasets annotated ``annotation=name`` (verified), oldest first:
        all of them (sealed at or after *since*), or the newest holding *rows* rows."""
        found: list[pd.DataFrame] = []
        total = 0
        query = select(ArtifactRow).where(
            ArtifactRow.kind == "dataset", ArtifactRow.shredded_at.is_(None)
        )
        if since is not None:
            query = query.where(ArtifactRow.created_at >= since)
        with self.db.read() as session:
            candidates = session.execute(query.order_by(ArtifactRow.created_at.desc())).scalars()
            for row in candidates:
                if info_of(row).annotations.get(annotation) != name:
                    continue
                found.append(codecs.decode("dataset", self._plaintext_attested(session, row)))
                total += len(found[-1])
                if rows is not None and total >= rows:
                    break
        return found[::-1]

    def labelled_accuracy(self, name: str) -> tuple[float, int] | None:
        """Accuracy of the logged predictions that have a label, and how many have one."""
        import pandas as pd

        labels = self._sealed_frames("labels", name)
        if not labels:
            return None
        logs = self._sealed_frames("predictions", name)
        if not logs:
            return None
        truth = pd.concat(labels).drop_duplicates("request_id", keep="last")
        logged = pd.concat(logs)[["request_id", "prediction"]]
        joined = logged.merge(truth, on="request_id")
        if joined.empty:
            return None
        hits = joined["prediction"].astype(str) == joined["label"].astype(str)
        return float(hits.mean()), len(joined)

    def monitor_run(
        self,
        name: str,
        ref: str | int = "production",
        *,
        data: pd.DataFrame | None = None,
        window: int = 10_000,
        within: float | None = None,
        mode: Mode = "default",
    ) -> MonitorRun:
        """Compare *data* (default: the newest *window* logged predictions, of the last
        *within* seconds when given) with the version's reference; the report is sealed
        and the outcome recorded."""
        if window < 1:
            raise UsageError("the window must hold at least one row")
        described = self.show_model(name, ref)
        self.authorize("dataset:read", model_resource(name), action="monitor.run")
        reference = self.reference_sample(name, described.version)
        current = data if data is not None else self.prediction_log(name, window, within)
        inputs = [c for c in reference.columns if c != "prediction"]
        if "prediction" not in current.columns and all(c in current.columns for c in inputs):
            # A dataset without outputs: the verified model predicts on it, so prediction
            # drift is measured too.
            _, model = self.resolve_model(name, described.version)
            current = current.assign(prediction=model.predict(current[inputs]))
        columns = [c for c in reference.columns if c in current.columns]
        if not [c for c in columns if c != "prediction"]:
            raise UsageError("the data shares no input column with the model's reference")
        from ..monitoring.drift import compare

        report = compare(reference, current, columns=columns, mode=mode)
        body = {"model": name, "version": described.version, **report.to_dict()}
        sealed = self.put(
            io.BytesIO(json.dumps(body, sort_keys=True, default=float).encode()),
            "report",
            f"{name}-v{described.version}-drift.json",
            media_type="application/json",
            parents=[described.artifact_id],
            annotations={"report": DRIFT_REPORT, "model": f"{name}@{described.version}"},
        )
        self.record(
            [
                self.event(
                    "monitor.run",
                    model_resource(name),
                    version=described.version,
                    rows=len(current),
                    drifted=report.drifted,
                    mode=mode,
                    report=sealed.id,
                )
            ]
        )
        return MonitorRun(name, described.version, report, sealed.id, reference, current)
