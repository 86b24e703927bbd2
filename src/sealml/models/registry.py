"""The model registry's rules, apart from storage: names, version statements, where an
alias points after a series of moves, and which gates a version fails."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..clock import parsed
from ..config import GateSection
from ..crypto.canonical import canonical_json
from ..errors import UsageError

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,63}")
STATUSES = ("active", "deprecated", "revoked")
SIGNATURE_ANNOTATION = "openssf-model-signing"
SCAN_REPORT = "model-scan"
PROFILE_REPORT = "feature-profile"
DRIFT_REPORT = "drift"
DRIFT_PAGE = "drift-page"  # the HTML page of a monitoring run (not a registry report)
# Reports sealml writes about a version; never taken for its evaluation report.
SBOM_REPORT = "sbom"
OWN_REPORTS = (SCAN_REPORT, PROFILE_REPORT, DRIFT_REPORT, SBOM_REPORT)


def model_resource(name: str) -> str:
    """The ledger resource of a registered model name."""
    return f"model:{name}"


def check_model_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError("a model name is 1-128 characters of a-z, 0-9, '.', '_', '-'")
    return name


def check_alias(alias: str) -> str:
    if not _ALIAS.fullmatch(alias) or alias.isdigit():
        raise UsageError(
            "an alias is 1-64 characters of a-z, 0-9, '_', '-', starting with a letter"
        )
    return alias


@dataclass(frozen=True)
class VersionFacts:
    """What a registered version is, as signed by the principal who registered it."""

    name: str
    version: int
    artifact_id: str
    artifact_digest: str
    signature_id: str
    scan_id: str
    provenance_id: str | None
    evaluation_id: str | None
    trained_by: str
    registered_by: str
    registered_at: str
    # Added after the first release: statements signed before it do not name one.
    sbom_id: str | None = None

    def statement(self) -> bytes:
        return canonical_json({"type": "sealml/model-version/v1", **vars(self)})

    @classmethod
    def from_statement(cls, data: Mapping[str, Any]) -> VersionFacts:
        fields: dict[str, Any] = {
            key: data.get(key) if key in _OPTIONAL_FACTS else data[key]
            for key in VersionFacts.__dataclass_fields__
        }
        return cls(**fields)


_OPTIONAL_FACTS = ("sbom_id",)


@dataclass(frozen=True)
class GateCheck:
    """One requirement of a gate, what was measured, and whether it holds."""

    check: str
    requirement: str
    measured: str
    passed: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def gate_checks(
    gate: GateSection | None,
    *,
    has_provenance: bool,
    metrics: Mapping[str, Any] | None,
    has_evaluation: bool | None = None,
) -> list[GateCheck]:
    """Every requirement of *gate* against a version's provenance and metrics (those of its
    evaluation report, plus any the pipeline's own reports give, such as
    ``screening.flagged_share``). *has_evaluation* defaults to whether *metrics* exist."""
    if gate is None:
        return []
    evaluated = metrics is not None if has_evaluation is None else has_evaluation
    checks = []
    if gate.require_provenance:
        checks.append(
            GateCheck(
                "provenance", "verified attestation", "yes" if has_provenance else "none",
                has_provenance, "no verified provenance attestation",
            )
        )  # fmt: skip
    if evaluation_required(gate):
        checks.append(
            GateCheck(
                "evaluation", "report", "yes" if evaluated else "none",
                evaluated, "no evaluation report",
            )
        )  # fmt: skip
    for metric, floor in sorted(gate.min_metrics.items()):
        value = _number((metrics or {}).get(metric))
        held = value is not None and value >= floor
        checks.append(
            GateCheck(
                metric, f">= {floor}", str(value), held, f"{metric} = {value} is below {floor}"
            )
        )
    for metric, ceiling in sorted(gate.max_metrics.items()):
        value = _number((metrics or {}).get(metric))
        held = value is not None and value <= ceiling
        checks.append(
            GateCheck(
                metric, f"<= {ceiling}", str(value), held, f"{metric} = {value} is above {ceiling}"
            )
        )
    return checks


def evaluation_required(gate: GateSection) -> bool:
    """Whether *gate* needs an evaluation report (asked for, or metrics to read)."""
    return bool(gate.require_evaluation or gate.min_metrics or gate.max_metrics)


def gate_failures(
    gate: GateSection | None,
    *,
    has_provenance: bool,
    metrics: Mapping[str, Any] | None,
) -> list[str]:
    """Why a version may not take an alias guarded by *gate* (empty when it may)."""
    checks = gate_checks(gate, has_provenance=has_provenance, metrics=metrics)
    return [check.reason for check in checks if not check.passed]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True)
class Approval:
    """A second principal's approval of a version for an alias, as the ledger records it."""

    version: int
    alias: str
    approver: str
    used: bool = False


@dataclass
class RegistryState:
    """A model's registry state as its ledger events tell it."""

    registered: dict[int, str]  # version -> SHA-256 of its signed statement
    status: dict[int, str]
    aliases: dict[str, list[int]]  # alias -> stack of versions, last = current
    frozen: str | None = None  # the reason, while the model is frozen under an incident
    # version -> (time, findings) of its newest `sealml model vulnerabilities` check
    vulnerability_checks: dict[int, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    registered_at: dict[int, str] = field(default_factory=dict)  # the ledger's time
    approvals: dict[str, Approval] = field(default_factory=dict)  # by approval id

    def current(self, alias: str) -> int | None:
        stack = self.aliases.get(alias)
        return stack[-1] if stack else None

    def open_approval(self, version: int, alias: str, not_by: str) -> str | None:
        """The id of an unused approval of *version* for *alias* by someone other than
        *not_by* (who trained it), oldest first; None when there is none."""
        return next(
            (
                approval_id
                for approval_id, approval in self.approvals.items()
                if (approval.version, approval.alias) == (version, alias)
                and not approval.used
                and approval.approver != not_by
            ),
            None,
        )


def replay(events: Iterable[Mapping[str, Any]]) -> RegistryState:
    """Rebuild a model's state from its successful ``model.*`` ledger events, in order."""
    state = RegistryState({}, {}, {})
    for event in events:
        if event.get("outcome") != "ok":
            continue
        action = str(event.get("action", ""))
        details = event.get("details", {})
        if action == "model.freeze":
            state.frozen = str(details.get("reason") or "frozen")
        elif action == "model.unfreeze":
            state.frozen = None
        version = details.get("version")
        if not isinstance(version, int):
            continue
        if action == "model.register":
            state.registered[version] = str(details.get("statement_sha256"))
            state.registered_at[version] = str(event.get("ts", ""))
            state.status[version] = "active"
        elif action in ("model.revoke", "model.deprecate"):
            if state.status.get(version) != "revoked":  # a revocation is final
                state.status[version] = "revoked" if action == "model.revoke" else "deprecated"
        elif action == "model.vulnerabilities":
            found = details.get("findings")
            state.vulnerability_checks[version] = (
                str(event.get("ts", "")),
                tuple(str(f) for f in found) if isinstance(found, list) else ("unreadable",),
            )
        elif action == "model.approve" and isinstance(details.get("approval"), str):
            state.approvals[details["approval"]] = Approval(
                version, str(details.get("alias")), str(event.get("principal"))
            )
        if action == "model.promote" and details.get("approval") in state.approvals:
            used = state.approvals[details["approval"]]
            state.approvals[details["approval"]] = replace(used, used=True)
        if action in ("model.promote", "model.rollback"):
            alias = str(details.get("alias"))
            stack = state.aliases.setdefault(alias, [])
            if action == "model.promote":
                stack.append(version)
            elif stack:
                stack.pop()
    return state


def vulnerability_gate(newest: tuple[str, tuple[str, ...]] | None, max_days: int) -> GateCheck:
    """Whether the version's newest vulnerability check is recent and found nothing."""
    name, requirement = "known vulnerabilities", f"none, checked within {max_days} days"
    if newest is None:
        reason = "no `sealml model vulnerabilities` check of this version"
        return GateCheck(name, requirement, "never checked", False, reason)
    when, findings = newest
    try:
        age = datetime.now(UTC) - parsed(when)
    except ValueError:
        return GateCheck(name, requirement, "unreadable", False, "the check's time is malformed")
    if age > timedelta(days=max_days):
        reason = f"the newest check is {age.days} days old; run it again with a fresh OSV copy"
        return GateCheck(name, requirement, f"{age.days} days old", False, reason)
    if findings:
        reason = f"advisories affect its packages: {', '.join(findings[:3])}"
        return GateCheck(name, requirement, f"{len(findings)} found", False, reason)
    return GateCheck(name, requirement, f"none ({when[:10]})", True)
