"""The state of a running server and the thread that keeps it current.

Requests read this state and never touch the workspace: the key ring, the model being
served and the freeze flag are swapped whole by the watcher thread, which polls the
workspace every ``serve.poll_seconds`` (promotions, rollbacks, revocations, freezes, new
and revoked keys), and the recorder writes the ledger and prediction logs in batches.
"""

from __future__ import annotations

import io
import threading
import time
from typing import TYPE_CHECKING, Any

from ..clock import utc_now
from ..config import ServeSection
from ..errors import AuthenticationError, SealmlError
from ..ledger import EventDraft
from ..models.registry import model_resource
from ..pipeline import codecs
from .apikeys import KeyRing
from .extraction import ExtractionAlert, ExtractionDetector
from .limits import Limiter, limiter_for
from .model import ServedModel
from .observability import JsonLog, Metrics
from .recorder import Recorder
from .target import Target
from .tokens import TokenVerifier

if TYPE_CHECKING:
    from ..workspace import Workspace

JWKS_REFRESH_SECONDS = 300.0
THROTTLE_FACTOR = 10.0


class Runtime:
    """Everything a request needs, kept current by a background thread."""

    def __init__(
        self,
        workspace: Workspace,
        target: Target,
        settings: ServeSection,
        *,
        insecure: bool = False,
        log: JsonLog | None = None,
    ) -> None:
        self.workspace = workspace
        self.target = target
        self.settings = settings
        self.insecure = insecure
        self.log = log or JsonLog(insecure=insecure)
        self.metrics = Metrics()
        self.limiter: Limiter = limiter_for(settings.redis_url)
        self.detector = ExtractionDetector(None, settings.extraction_window)
        self.throttled: set[str] = set()
        self.current: ServedModel | None = None
        self.frozen: str | None = None
        self.refusal: str | None = None  # why this server's principal may no longer serve
        self.keyring = KeyRing()
        self.tokens = (
            TokenVerifier(settings.jwt, workspace.root) if settings.jwt is not None else None
        )
        self.signing_key = workspace.require_actor().signing_key
        self._lock = threading.Lock()  # one thread at a time in the workspace
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="sealml-watch", daemon=True)
        self.recorder = Recorder(
            self._write_events,
            self._write_predictions,
            lambda error: self.log.write("recorder-error", error=error),
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load and verify the model (raising when it does not verify: the server must not
        start), then start the watcher and the recorder."""
        with self._lock:
            self.keyring = KeyRing(self.workspace.stored_api_keys())
            self.frozen = self.workspace.serving_state(self.target.name, self.target.ref)[2]
            self.current = self._load()
            self.detector = ExtractionDetector(
                self.current.profile, self.settings.extraction_window
            )
        self._publish()
        self.log.write(
            "serving",
            model=self.target.name,
            version=self.current.version,
            ref=self.target.ref,
            frozen=self.frozen is not None,
        )
        self.recorder.start()
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=30)
        self.recorder.close()

    def _load(self) -> ServedModel:
        described, model = self.workspace.resolve_model(self.target.name, self.target.ref)
        profile = self.workspace.model_profile(self.target.name, described.version)
        return ServedModel.build(
            self.target.name,
            described.version,
            described.artifact_id,
            model,
            profile,
            max_batch=self.settings.max_batch,
            margin=self.settings.range_margin,
        )

    def _publish(self) -> None:
        version = self.current.version if self.current is not None else 0
        self.metrics.model_version.labels(self.target.name).set(version)
        self.metrics.frozen.labels(self.target.name).set(1 if self.frozen else 0)

    # -- keeping current ------------------------------------------------------------------

    def _watch(self) -> None:
        last_jwks = time.monotonic()
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                self.poll()
                if self.tokens is not None and time.monotonic() - last_jwks > JWKS_REFRESH_SECONDS:
                    self.tokens.refresh()
                    last_jwks = time.monotonic()
            except Exception as error:  # the watcher must survive a bad poll and retry
                self.log.write("watch-error", error=f"{type(error).__name__}: {error}")

    def poll(self) -> None:
        """Follow the workspace once: its own principal, keys, alias moves, revocations and
        freezes."""
        with self._lock:
            if not self._still_authorised():
                return
            self.keyring = KeyRing(self.workspace.stored_api_keys())
            version, status, frozen = self.workspace.serving_state(
                self.target.name, self.target.ref
            )
            if frozen != self.frozen:
                self.log.write("frozen" if frozen else "unfrozen", model=self.target.name)
                self.frozen = frozen
            current = self.current
            if version is None or status != "active":
                if current is not None:
                    self.log.write(
                        "stopped", model=self.target.name, version=current.version, status=status
                    )
                self.current = None
            elif current is None or current.version != version:
                try:
                    self.current = self._load()
                    self.detector = ExtractionDetector(
                        self.current.profile, self.settings.extraction_window
                    )
                    self.log.write(
                        "swapped",
                        model=self.target.name,
                        version=version,
                        previous=current.version if current else None,
                    )
                except SealmlError as error:
                    self.current = None  # fail closed: an unverified model is never served
                    self.log.write(
                        "refused", model=self.target.name, version=version, error=str(error)
                    )
        self._publish()

    def _still_authorised(self) -> bool:
        """Whether the principal this server runs as may still serve: disabled, given a new
        key or stripped of ``model:serve`` / ``model:read`` since it started, it stops
        (every answer 503, recorded once) until that changes back."""
        try:
            actor = self.workspace.refresh_actor()
            lacking = [
                p
                for p in ("model:serve", "model:read")
                if not self.workspace.policy.allows(actor.principal.roles, p)
            ]
            refusal = f"{actor.name} no longer holds {', '.join(lacking)}" if lacking else None
        except AuthenticationError as error:
            refusal = str(error)
        if refusal is not None and refusal != self.refusal:
            self.log.write("stopped", model=self.target.name, error=refusal)
            resource = model_resource(self.target.name)
            self.workspace.record(
                [self.workspace.event("serve.stop", resource, "denied", error=refusal)]
            )
        self.refusal = refusal
        if refusal is not None:
            self.current = None
        return refusal is None

    # -- writes, off the request path -----------------------------------------------------

    def _write_events(self, drafts: list[EventDraft]) -> None:
        with self._lock:
            self.workspace.record(drafts)

    def _write_predictions(self, data: bytes, rows: int) -> None:
        served = self.current
        if served is None:
            return
        with self._lock:
            self.workspace.put(
                io.BytesIO(data),
                "dataset",
                f"{self.target.name}-predictions-{utc_now()}.parquet",
                media_type=codecs.CODECS["dataset"].media_type,
                parents=[served.artifact_id],
                annotations={"predictions": self.target.name, "rows": str(rows)},
            )

    def freeze(self, reason: str, frozen: bool, requested_by: str) -> None:
        """Freeze or unfreeze the model for every server (recorded in the ledger)."""
        with self._lock:
            self.workspace.freeze_model(
                self.target.name, reason, frozen=frozen, on_behalf_of=requested_by
            )
            self.frozen = reason if frozen else None
        self._publish()

    # -- abuse ----------------------------------------------------------------------------

    def extraction_alert(self, alert: ExtractionAlert) -> None:
        self.metrics.extraction_alerts.labels(alert.signal).inc()
        if self.settings.extraction_throttle:
            self.throttled.add(alert.principal)
        self.log.write(
            "extraction-alert",
            principal=alert.principal,
            signal=alert.signal,
            score=alert.score,
            throttled=self.settings.extraction_throttle,
        )
        self.recorder.event(
            EventDraft(
                alert.principal,
                "serve.extraction-alert",
                model_resource(self.target.name),
                "ok",
                {
                    "signal": alert.signal,
                    "score": alert.score,
                    "window": alert.window,
                    "throttled": self.settings.extraction_throttle,
                },
            )
        )

    def key_rate(self, principal: str) -> float:
        rate = self.settings.key_rate
        return rate / THROTTLE_FACTOR if principal in self.throttled else rate

    def describe(self) -> dict[str, Any]:
        served = self.current
        features = served.schema.features if served else None
        return {
            "model": self.target.name,
            "ref": self.target.ref,
            "version": served.version if served else None,
            "frozen": self.frozen is not None,
            "inputs": list(features) if features else None,
            "output": self.settings.output,
        }
