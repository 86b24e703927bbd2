"""Alerts from monitoring runs, and incidents: what a critical alert contained (freeze,
rollback) and the human follow-up (``sealml incident ls|show|close``).

Incidents live in the ledger only (``incident.open``, ``incident.action``,
``incident.close``), so their history is as tamper-evident as everything else.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import resolve
from ..errors import NotFoundError, SealmlError, UsageError
from ..ledger import EventFilter, Ledger
from ..models.registry import DRIFT_PAGE, model_resource
from .apikeys import ApiKeyOperations
from .monitoring import MonitorOperations, MonitorRun

# The monitoring, drift and schema modules (NumPy, httpx) load when a command uses them, so
# every other command starts without them.
if TYPE_CHECKING:
    import pandas as pd

    from ..data.profile import Profile
    from ..monitoring.alerts import Alert
    from ..monitoring.drift import Mode
    from ..monitoring.drills import DrillResult

_log = logging.getLogger("sealml.monitor")


@dataclass(frozen=True)
class CheckOutcome:
    """A monitoring run with what it led to."""

    run: MonitorRun
    figures: dict[str, float]
    alerts: list[Alert] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)  # rules still cooling down
    incident: str | None = None
    page: str = ""  # the HTML report (also sealed)


def _figures(run: MonitorRun, profile: Profile | None, ood_threshold: float) -> dict[str, float]:
    import pandas as pd

    from ..serving.schema import OodScorer, numeric_features, numeric_rows

    report = run.report
    inputs = [c for c in report.columns if c.column != "prediction"]
    figures = {
        "drifted_columns": float(sum(c.drifted for c in inputs)),
        "prediction_drift": float(
            any(c.drifted for c in report.columns if c.column == "prediction")
        ),
        "missing_rate_change": max(
            (abs(c.current_missing - c.reference_missing) for c in inputs), default=0.0
        ),
    }
    current = run.current
    if "ood_score" in current.columns:
        scores = current["ood_score"].to_numpy(dtype=float)
    else:
        names = [f.name for f in numeric_features(profile)]
        present = [n for n in names if n in current.columns]
        records = current[present].to_dict(orient="records") if present == names else []
        scores = OodScorer(profile).scores(numeric_rows(records, names)) if records else []
    figures["ood_rate"] = float((pd.Series(scores) > ood_threshold).mean()) if len(scores) else 0.0
    return figures


class IncidentOperations(MonitorOperations, ApiKeyOperations):
    """``sealml monitor check`` and ``sealml incident ...``."""

    def monitor_check(
        self,
        name: str,
        ref: str | int = "production",
        *,
        data: pd.DataFrame | None = None,
        window: int | None = None,
        within: float | None = None,
        mode: Mode | None = None,
    ) -> CheckOutcome:
        """Run the drift comparison, evaluate the alert rules, deliver new alerts (ledger,
        webhook), and on a critical alert open an incident and take its actions."""
        from ..monitoring import alerts as alerting

        settings = self.monitor_settings
        abuse, flagged_keys = self._abuse_since_last_run(name)
        run = self.monitor_run(
            name, ref, data=data, window=window or settings.window, within=within,
            mode=mode or settings.mode,
        )  # fmt: skip
        profile = self.model_profile(name, run.version)
        figures = _figures(run, profile, settings.ood_threshold) | abuse
        figures |= self._performance(name, run.version)
        raised, suppressed = [], []
        for alert in alerting.evaluate(settings.rules, figures):
            if self._cooling_down(name, alert.rule, settings.cooldown_minutes):
                suppressed.append(alert.rule)
            else:
                raised.append(alert)
        page = self._seal_page(run, raised, figures)
        if not raised:
            return CheckOutcome(run, figures, [], suppressed, None, page)
        for alert in raised:
            _log.warning("%s alert on %s v%s: %s (%s = %g)", alert.severity, name,
                         run.version, alert.rule, alert.metric, alert.value)  # fmt: skip
        events = [
            self.event("monitor.alert", model_resource(name), version=run.version,
                       report=run.report_id, **alert.to_dict())
            for alert in raised
        ]  # fmt: skip
        self.record(events)
        self._deliver(name, run, raised, figures)
        critical = [a for a in raised if a.severity == "critical"]
        incident = (
            self._open_incident(name, ref, run, critical, figures, flagged_keys)
            if critical
            else None
        )
        return CheckOutcome(run, figures, raised, suppressed, incident, page)

    def _seal_page(self, run: MonitorRun, raised: list[Alert], figures: dict[str, float]) -> str:
        from ..monitoring.report import to_html as drift_page

        page = drift_page(run.name, run.version, run.report, run.reference, run.current,
                          raised, figures)  # fmt: skip
        self.put(
            io.BytesIO(page.encode("utf-8")),
            "report",
            f"{run.name}-v{run.version}-drift.html",
            media_type="text/html",
            parents=[run.report_id],
            annotations={"report": DRIFT_PAGE, "model": f"{run.name}@{run.version}"},
        )
        return page

    def _performance(self, name: str, version: int) -> dict[str, float]:
        """Accuracy on the labelled predictions, and its drop from the evaluation's."""
        measured = self.labelled_accuracy(name)
        if measured is None:
            return {}
        accuracy, _ = measured
        figures = {"accuracy": accuracy}
        described = self.show_model(name, version)
        if described.evaluation_id is not None:
            with self.db.read() as session:
                report = json.loads(self._plaintext_attested(
                    session, self._find(session, described.evaluation_id)))  # fmt: skip
            metrics = report.get("metrics", report) if isinstance(report, dict) else {}
            reference = metrics.get("accuracy") if isinstance(metrics, dict) else None
            if isinstance(reference, int | float):
                figures["accuracy_drop"] = float(reference) - accuracy
        return figures

    def _abuse_since_last_run(self, name: str) -> tuple[dict[str, float], list[str]]:
        """Serving's refusals and extraction alerts for *name* since its last monitoring
        run (or ever), and the API keys the alerts named."""
        from ..serving.recorder import INVALID, RATE_LIMITED

        resource = model_resource(name)
        counts = {"denials": 0.0, "schema_violations": 0.0, "rate_limited": 0.0}
        alerts: list[str] = []
        with self.db.read() as session:
            events = [e.fields() for e in Ledger.events(session, EventFilter(resource=resource))]
        last_run = max((i for i, e in enumerate(events) if e["action"] == "monitor.run"),
                       default=-1)  # fmt: skip
        for event in events[last_run + 1 :]:
            if str(event["action"]).startswith("serve.") and event["outcome"] == "denied":
                reason = event["details"].get("reason")
                figure = {INVALID: "schema_violations", RATE_LIMITED: "rate_limited"}.get(
                    reason, "denials"
                )
                counts[figure] += float(event["details"].get("count", 1))
            elif event["action"] == "serve.extraction-alert":
                alerts.append(str(event["principal"]))
        keys = [p.removeprefix("apikey:") for p in alerts if p.startswith("apikey:")]
        return {**counts, "extraction_alerts": float(len(alerts))}, keys

    def _cooling_down(self, name: str, rule: str, minutes: float) -> bool:
        since = (datetime.now(UTC) - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S")
        with self.db.read() as session:
            for event in Ledger.events(
                session, EventFilter(resource=model_resource(name), action="monitor.alert")
            ):
                fields = event.fields()
                if fields["details"].get("rule") == rule and str(fields["ts"]) >= since:
                    return True
        return False

    def _deliver(
        self, name: str, run: MonitorRun, raised: list[Alert], figures: dict[str, float]
    ) -> None:
        settings = self.monitor_settings
        if settings.smtp_host and settings.smtp_from and settings.smtp_to:
            self._mail(name, run, raised, figures)
        if not settings.webhook_url:
            return
        if not settings.webhook_secret_file:
            raise UsageError("monitor.webhook_url needs monitor.webhook_secret_file")
        secret = resolve(self.root, settings.webhook_secret_file).read_bytes().strip()
        payload = {
            "workspace": self.config.workspace.id,
            "model": name,
            "version": run.version,
            "alerts": [a.to_dict() for a in raised],
            "figures": figures,
            "drifted": run.report.drifted,
            "report": run.report_id,
        }
        from ..monitoring import alerts as alerting

        try:
            alerting.post_webhook(settings.webhook_url, secret, payload)
        except UsageError as error:
            self.record([self.event("monitor.webhook", model_resource(name), "failed",
                                    error=str(error))])  # fmt: skip

    def _mail(
        self, name: str, run: MonitorRun, raised: list[Alert], figures: dict[str, float]
    ) -> None:
        settings = self.monitor_settings
        assert settings.smtp_host is not None and settings.smtp_from is not None
        password = None
        if settings.smtp_password_file:
            path = resolve(self.root, settings.smtp_password_file)
            password = path.read_text(encoding="utf-8").strip()
        worst = max(raised, key=lambda a: ("info", "warning", "critical").index(a.severity))
        lines = [f"{a.severity}: {a.rule} ({a.metric} = {a.value:g}, above {a.threshold:g})"
                 for a in raised]  # fmt: skip
        lines += ["", f"drifted columns: {', '.join(run.report.drifted) or 'none'}",
                  f"sealed report: {run.report_id}", f"figures: {figures}"]  # fmt: skip
        from ..monitoring import alerts as alerting

        try:
            alerting.send_mail(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                recipients=settings.smtp_to,
                subject=f"[sealml {worst.severity}] {name} v{run.version}: {worst.rule}",
                text="\n".join(lines),
                user=settings.smtp_user,
                password=password,
                ca_file=(
                    str(resolve(self.root, settings.smtp_ca_file))
                    if settings.smtp_ca_file
                    else None
                ),
            )
        except UsageError as error:
            self.record([self.event("monitor.mail", model_resource(name), "failed",
                                    error=str(error))])  # fmt: skip

    def _open_incident(
        self,
        name: str,
        ref: str | int,
        run: MonitorRun,
        critical: list[Alert],
        figures: dict[str, float],
        flagged_keys: list[str],
    ) -> str:
        incident = "inc-" + secrets.token_hex(4)
        resource = f"incident:{incident}"
        self.record(
            [
                self.event("incident.open", resource, model=name, version=run.version,
                           rules=[a.rule for a in critical], figures=figures,
                           evidence=run.report_id, drifted=run.report.drifted)
            ]
        )  # fmt: skip
        reason = f"{incident}: {', '.join(a.rule for a in critical)}"
        for action in dict.fromkeys(a for alert in critical for a in alert.actions):
            try:
                if action == "freeze":
                    self.freeze_model(name, reason)
                elif action == "rollback":
                    numbered = not isinstance(ref, str) or ref.lstrip("v").isdigit()
                    self.rollback_model(name, "production" if numbered else str(ref))
                elif action == "revoke-key":
                    for key in dict.fromkeys(flagged_keys):
                        self.revoke_api_key(key, reason)
                outcome, error = "ok", None
            except SealmlError as failure:
                outcome, error = "failed", str(failure)
            details: dict[str, Any] = {"step": action, "model": name}
            if error:
                details["error"] = error
            self.record([self.event("incident.action", resource, outcome, **details)])
        return incident

    # -- the human follow-up --------------------------------------------------------------

    def incidents(self) -> list[dict[str, Any]]:
        """Every incident, newest first, with its actions and whether it is closed."""
        self.authorize("audit:read", "incident:*", action="incident.ls")
        found: dict[str, dict[str, Any]] = {}
        with self.db.read() as session:
            for event in Ledger.events(session, EventFilter(action="incident.*")):
                fields = event.fields()
                key = str(fields["resource"]).removeprefix("incident:")
                details = fields["details"]
                if fields["action"] == "incident.open":
                    opened = {
                        "id": key,
                        "opened_at": fields["ts"],
                        "opened_by": fields["principal"],
                    }
                    found[key] = {**opened, **details, "actions": [], "closed": None}
                elif key in found and fields["action"] == "incident.action":
                    found[key]["actions"].append({"outcome": fields["outcome"], **details})
                elif key in found and fields["action"] == "incident.close":
                    found[key]["closed"] = {"at": fields["ts"], "by": fields["principal"],
                                            "note": details.get("note")}  # fmt: skip
        return sorted(found.values(), key=lambda i: str(i["opened_at"]), reverse=True)

    def incident(self, incident: str) -> dict[str, Any]:
        for item in self.incidents():
            if item["id"] == incident:
                return item
        raise NotFoundError(f"no incident {incident!r}")

    def close_incident(self, incident: str, note: str) -> dict[str, Any]:
        """Close an incident with a note (containment such as a freeze is lifted apart)."""
        if not note.strip():
            raise UsageError("a note is required")
        current = self.incident(incident)
        if current["closed"] is not None:
            raise UsageError(f"incident {incident} is already closed")
        self.authorize("registry:freeze", f"incident:{incident}", action="incident.close")
        self.record([self.event("incident.close", f"incident:{incident}", note=note)])
        return self.incident(incident)

    # -- drills ---------------------------------------------------------------------------

    def drill(self, scenario: str, name: str, ref: str = "production") -> DrillResult:
        """Run *scenario* against a copy of this workspace (never this one) and record the
        result here."""
        from ..monitoring.drills import DRILLS, workspace_copy

        if scenario not in DRILLS:
            raise UsageError(f"unknown scenario {scenario!r}; use {', '.join(DRILLS)}")
        actor = self.require_actor()
        self.authorize("audit:verify", "drill:*", action="drill.run")
        passphrase = self._passphrase_value()

        def open_copy(root: Path) -> Any:
            copy = type(self).load(root, passphrase)
            copy.actor = actor
            _ = copy.keys
            return copy

        with workspace_copy(self.root, open_copy) as copy:
            result = DRILLS[scenario](copy, name, ref)
        self.record([self.event("drill.run", f"drill:{scenario}", model=name, **result.to_dict())])
        return result
