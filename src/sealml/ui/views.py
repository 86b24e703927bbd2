"""What each dashboard page shows, gathered through the workspace's public API.

Every function runs as the signed-in principal: the workspace decides what they may see
(and writes denials to the ledger), so the dashboard cannot show more than the CLI would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import NotFoundError
from ..ledger import EventFilter
from ..models.registry import DRIFT_PAGE

if TYPE_CHECKING:
    from ..workspace import Workspace

PAGE_SIZE = 50
RECENT_EVENTS = 10
MONITOR_RUNS = 10


@dataclass(frozen=True)
class Rights:
    """Which parts of the dashboard the principal's roles open."""

    registry: bool
    audit: bool
    verify: bool
    users: bool

    @classmethod
    def of(cls, workspace: Workspace) -> Rights:
        roles = workspace.require_actor().principal.roles
        allows = workspace.policy.allows
        return cls(
            registry=allows(roles, "registry:read"),
            audit=allows(roles, "audit:read"),
            verify=allows(roles, "audit:verify"),
            users=allows(roles, "user:read"),
        )


def _event_row(fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "details": fields.get("details") or {}}


def overview(workspace: Workspace) -> dict[str, Any]:
    """The front page: models and their aliases, open incidents, the latest events."""
    rights = Rights.of(workspace)
    page: dict[str, Any] = {"rights": rights, "models": [], "incidents": [], "events": []}
    if rights.registry:
        page["models"] = workspace.models()
    if rights.audit:
        page["incidents"] = [i for i in workspace.incidents() if i["closed"] is None]
        recent = workspace.audit_events(EventFilter(), RECENT_EVENTS, newest_first=True)
        page["events"] = [_event_row(e.fields()) for e in recent]
    return page


def model(workspace: Workspace, name: str) -> dict[str, Any]:
    """One model: every version with its state, the registry history, and the gates its
    newest active version faces for each alias the registry rules name."""
    versions = workspace.versions(name)
    history = workspace.history(name)
    rules = workspace.registry_rules
    newest = next((v for v in versions if v.status == "active"), None)
    gates: dict[str, list[Any]] = {}
    if newest is not None:
        for alias in sorted(rules.gates):
            gates[alias] = workspace.gate_report(name, newest.version, alias)
    monitoring = [
        page
        for version in versions
        for page in workspace.ls(kind="report", name=f"{name}-v{version.version}-drift.html")
        if page.annotations.get("report") == DRIFT_PAGE
    ]
    return {
        "name": name,
        "versions": versions,
        "history": list(reversed(history)),
        "gated_version": newest.version if newest else None,
        "gates": gates,
        "monitoring": sorted(monitoring, key=lambda p: p.created_at, reverse=True)[:MONITOR_RUNS],
    }


def drift_page(workspace: Workspace, artifact_id: str) -> str:
    """A monitoring run's sealed drift page (self-contained HTML), verified and read."""
    info = workspace.info(artifact_id)
    if info.annotations.get("report") != DRIFT_PAGE or info.media_type != "text/html":
        raise NotFoundError(f"artifact {artifact_id} is not a drift page")
    return workspace.read_bytes(artifact_id).decode("utf-8", "replace")


def card(workspace: Workspace, name: str, version: int) -> str:
    """A version's model card as a self-contained HTML page, built from verified facts."""
    from ..governance import modelcard

    return modelcard.to_html(workspace.model_card(name, version))


def provenance(workspace: Workspace, name: str, version: int) -> dict[str, Any]:
    """Which data, code and people made a version: its provenance chain back to the pinned
    sources, every step verified (content, signatures, ledger record, envelopes)."""
    described = workspace.show_model(name, version)
    steps = workspace.verify_provenance(described.artifact_id)
    names = {step.artifact.id: step.artifact.name for step in steps}
    logs: dict[str, str] = {}
    for made in {(s.artifact.annotations.get("pipeline"), s.artifact.annotations.get("stage"))
                 for s in steps if s.attestation}:  # fmt: skip
        for info in workspace.ls(kind="report", name=f"{made[0]}/{made[1]}.log"):
            if info.annotations.get("log") == "stage":
                logs.setdefault(info.annotations.get("attestation", ""), info.id)
    return {
        "name": name,
        "version": version,
        "steps": [
            {
                "artifact": step.artifact,
                "status": step.status,
                "signer": step.signer or "-",
                "inputs": [names.get(i, i) for i in step.inputs],
                "log": logs.get(step.attestation) if step.attestation else None,
            }
            for step in steps
        ],
    }


def stage_log(workspace: Workspace, artifact_id: str) -> dict[str, Any]:
    """A stage's sealed log (what it printed and logged), verified and read."""
    info = workspace.info(artifact_id)
    if info.annotations.get("log") != "stage" or info.media_type != "text/plain":
        raise NotFoundError(f"artifact {artifact_id} is not a stage log")
    text = workspace.read_bytes(artifact_id).decode("utf-8", "replace")
    return {"info": info, "text": text}


def audit(workspace: Workspace, where: EventFilter) -> dict[str, Any]:
    """A page of ledger events, newest first, with the cursor of the next page."""
    events = workspace.audit_events(where, PAGE_SIZE + 1, newest_first=True)
    shown = events[:PAGE_SIZE]
    more = len(events) > PAGE_SIZE
    return {
        "events": [{"seq": e.seq, **_event_row(e.fields())} for e in shown],
        "next_before": shown[-1].seq if more and shown else None,
        "where": where,
        "rights": Rights.of(workspace),
    }


def verification(workspace: Workspace) -> dict[str, Any]:
    """Recompute the whole ledger against its checkpoints and the local witness."""
    report = workspace.audit_verify()
    return {
        "ok": report.ok,
        "events": report.events,
        "checkpoints": report.checkpoints,
        "latest_checkpoint": report.latest_checkpoint,
        "root": report.root.hex(),
        "unanchored": report.unanchored,
        "problems": report.problems,
    }


def people(workspace: Workspace) -> dict[str, Any]:
    """Who may do what (an access review): every principal, its roles, whether it has a
    second factor, the permissions the approved policy gives each role, who approved it and
    whether sealml.toml proposes changes, and where the workspace's keys are."""
    principals = workspace.users()
    roles = sorted({role for p in principals for role in p.roles})
    granted = {role: list(workspace.policy.roles.get(role, ())) for role in roles}
    return {
        "principals": principals,
        "granted": granted,
        "approved": workspace.in_force,
        "pending": workspace.policy_pending,
        "totp": workspace.totp_enrolled_ids(),
        "keys": workspace.key_summary(),
    }


def incidents(workspace: Workspace) -> list[dict[str, Any]]:
    """Every incident, newest first."""
    return workspace.incidents()
