"""Prometheus metrics and one structured JSON log line per request.

Log lines carry ids, outcomes and timings, never inputs, outputs, keys or tokens.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    """The server's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sealml_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "sealml_request_seconds",
            "Request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.denials = Counter(
            "sealml_denials",
            "Requests refused by authentication or authorisation",
            ["reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "sealml_rate_limited", "Requests refused by a rate limit", ["scope"], registry=r
        )
        self.validation_failures = Counter(
            "sealml_validation_failures", "Requests refused by input validation", registry=r
        )
        self.instances = Counter("sealml_predicted_instances", "Instances predicted", registry=r)
        self.ood = Counter(
            "sealml_ood_instances", "Instances far from the training data", registry=r
        )
        self.extraction_alerts = Counter(
            "sealml_extraction_alerts", "Model-extraction alerts", ["signal"], registry=r
        )
        self.model_version = Gauge(
            "sealml_model_version", "Version being served (0: none)", ["model"], registry=r
        )
        self.frozen = Gauge("sealml_model_frozen", "1 while frozen", ["model"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class JsonLog:
    """Writes one JSON object per line to stderr (or a given stream)."""

    def __init__(self, *, insecure: bool = False, stream: Any = None) -> None:
        self._stream = stream or sys.stderr
        self._extra = {"transport": "INSECURE plain HTTP"} if insecure else {}
        self._logger = logging.getLogger("sealml.serve")

    def write(self, event: str, **fields: Any) -> None:
        record = {"ts": round(time.time(), 3), "event": event, **fields, **self._extra}
        try:
            self._stream.write(orjson.dumps(record, default=str).decode() + "\n")
        except (OSError, ValueError):  # a closed stream must not fail a request
            self._logger.debug("log stream unavailable")
