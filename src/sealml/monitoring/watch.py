"""``sealml monitor watch``: monitoring runs on a schedule, their figures as Prometheus
metrics."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..errors import UsageError

_EVERY = re.compile(r"(\d{1,6})([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: str) -> float:
    """``30s``, ``15m``, ``1h``, ``1d`` as seconds (at least ten)."""
    match = _EVERY.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"--every takes 30s, 15m, 1h or 1d, not {text!r}")
    seconds = int(match.group(1)) * _SECONDS[match.group(2)]
    if seconds < 10:
        raise UsageError("--every must be at least 10 seconds")
    return float(seconds)


class WatchMetrics:
    """Drift scores, drifted columns, figures and alert counts per model."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.score = Gauge("sealml_drift_score", "Latest drift score per column",
                           ["model", "column", "statistic"], registry=r)  # fmt: skip
        self.drifted = Gauge("sealml_drifted_columns", "Columns drifted in the latest run",
                             ["model"], registry=r)  # fmt: skip
        self.figure = Gauge("sealml_monitor_figure", "Latest value of each rule figure",
                            ["model", "figure"], registry=r)  # fmt: skip
        self.alerts = Counter("sealml_monitor_alerts", "Alerts raised",
                              ["model", "rule", "severity"], registry=r)  # fmt: skip
        self.runs = Counter("sealml_monitor_runs", "Monitoring runs", ["model", "outcome"],
                            registry=r)  # fmt: skip

    def observe(self, model: str, outcome: Any) -> None:
        """Record one :class:`~sealml.workspace.incidents.CheckOutcome`."""
        report = outcome.run.report
        for column in report.columns:
            self.score.labels(model, column.column, column.statistic).set(column.score)
        self.drifted.labels(model).set(len(report.drifted))
        for name, value in outcome.figures.items():
            self.figure.labels(model, name).set(value)
        for alert in outcome.alerts:
            self.alerts.labels(model, alert.rule, alert.severity).inc()
        self.runs.labels(model, "ok").inc()


def watch(
    check: Callable[[], Any],
    metrics: WatchMetrics,
    model: str,
    every: float,
    *,
    iterations: int | None = None,
    stop: threading.Event | None = None,
    report: Callable[[str], None] = print,
) -> int:
    """Call *check* every *every* seconds (the first at once) until *stop* is set or
    *iterations* ran; a failed run is reported and counted, never fatal. Returns the
    number of runs."""
    stop = stop or threading.Event()
    done = 0
    while not stop.is_set():
        try:
            outcome = check()
            metrics.observe(model, outcome)
            drifted = ", ".join(outcome.run.report.drifted) or "none"
            report(f"{model}: drifted {drifted}; alerts {len(outcome.alerts)}")
        except Exception as error:  # a bad run must not end the watch
            metrics.runs.labels(model, "failed").inc()
            report(f"{model}: run failed: {str(error)[:200]}")
        done += 1
        if iterations is not None and done >= iterations:
            break
        stop.wait(every)
    return done
