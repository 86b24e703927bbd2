"""What a server writes to the workspace, off the request path: ledger events (denials
coalesced, so a flood of bad requests cannot flood the ledger) and sealed prediction logs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..ledger import EventDraft
from ..pipeline import codecs

# Refusal reasons monitoring counts apart from authentication and authorisation denials.
INVALID = "invalid input"
RATE_LIMITED = "rate limited"
FLUSH_SECONDS = 1.0
MAX_PREDICTION_ROWS = 50_000


class Recorder:
    """Buffers events and prediction rows; a background thread writes them every second
    (and on :meth:`close`) through *write_events* and *write_predictions*."""

    def __init__(
        self,
        write_events: Callable[[list[EventDraft]], None],
        write_predictions: Callable[[bytes, int], None],
        on_error: Callable[[str], None],
        *,
        predictions_every: float = 10.0,
    ) -> None:
        self._write_events = write_events
        self._write_predictions = write_predictions
        self._on_error = on_error
        self._lock = threading.Lock()
        self._events: list[EventDraft] = []
        self._denials: Counter[tuple[str, str, str, str]] = Counter()
        self._rows: list[dict[str, Any]] = []
        self._predictions_every = predictions_every
        self._since_predictions = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sealml-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def event(self, draft: EventDraft) -> None:
        with self._lock:
            self._events.append(draft)

    def denial(self, principal: str, action: str, resource: str, reason: str) -> None:
        """Count a refusal; identical refusals within a second become one event."""
        with self._lock:
            self._denials[(principal, action, resource, reason)] += 1

    def predictions(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            if len(self._rows) < MAX_PREDICTION_ROWS:
                self._rows.extend(rows[: MAX_PREDICTION_ROWS - len(self._rows)])

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self._since_predictions += FLUSH_SECONDS
            self.flush(predictions=self._since_predictions >= self._predictions_every)

    def flush(self, *, predictions: bool = True) -> None:
        import pandas as pd

        with self._lock:
            events, self._events = self._events, []
            denials, self._denials = self._denials, Counter()
            rows: list[dict[str, Any]] = []
            if predictions:
                rows, self._rows = self._rows, []
                self._since_predictions = 0.0
        events += [
            EventDraft(principal, action, resource, "denied", {"reason": reason, "count": count})
            for (principal, action, resource, reason), count in denials.items()
        ]
        try:
            if events:
                self._write_events(events)
            if rows:
                frame = pd.DataFrame.from_records(rows)
                frame["at"] = pd.to_datetime(frame["at"], unit="s", utc=True)
                self._write_predictions(
                    codecs.encode("dataset", frame, "prediction log"), len(rows)
                )
        except Exception as error:  # a failed write is reported, never fatal to serving
            self._on_error(f"{type(error).__name__}: {error}")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.flush()


def prediction_row(
    request_id: str,
    principal: str,
    version: int,
    inputs: dict[str, Any],
    prediction: Any,
    score: float | None,
    ood: float,
) -> dict[str, Any]:
    """One logged prediction: inputs (``input.<name>``) beside the label, the top class
    probability and the out-of-distribution score (the time as epoch seconds until the
    batch is written, which is cheaper per request than formatting it)."""
    return {
        "at": time.time(),
        "request_id": request_id,
        "principal": principal,
        "version": version,
        **{f"input.{k}": v for k, v in inputs.items()},
        "prediction": prediction,
        "score": score,
        "ood_score": ood,
    }
