"""Model cards: what sealml knows about a registered version, for people to read.

Everything on the card comes from verified records, never from the user's say-so: the
signed version statement, the provenance chain back to the pinned sources (each with its
digest), the evaluation report (metrics, fairness per group, robustness per budget,
membership-inference risk), the screening and PII reports made along the way, the gate
checks, and who trained, signed and registered the model. Markdown for review in a
repository, HTML (with plots, self-contained) for everyone else.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from . import pages

LIMITATIONS = [
    "Metrics describe the evaluation data above; other populations may differ.",
    "Robustness and membership-inference figures come from specific attacks: they bound "
    "the risk from below, a stronger attacker may do better.",
    "Fairness is measured only for the sensitive attributes listed; others were not assessed.",
]


def limitations(evaluation: dict[str, Any] | None) -> list[str]:
    """The standing limitations, plus those the evaluation's own figures show."""
    found = list(LIMITATIONS)
    metrics = (evaluation or {}).get("metrics") or {}
    shared = metrics.get("leakage.test_rows_in_train")
    if isinstance(shared, int | float) and shared > 0:
        found.append(
            f"{shared:.1%} of the test rows also occur in the training rows (same features "
            "and label): figures on those rows may overstate how the model does on new data."
        )
    return found


@dataclass
class CardFacts:
    """Everything a card shows, gathered (and verified) by the workspace."""

    name: str
    version: dict[str, Any]
    model: dict[str, Any]
    sources: list[dict[str, Any]]
    chain: list[dict[str, Any]]
    evaluation: dict[str, Any] | None
    reports: dict[str, Any]
    gates: dict[str, list[dict[str, Any]]]
    parameters: dict[str, Any] = field(default_factory=dict)
    limitations: list[str] = field(default_factory=lambda: list(LIMITATIONS))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def markdown(facts: CardFacts) -> str:
    """The card as Markdown."""
    version = facts.version
    lines = [
        f"# Model card: {facts.name} v{version['version']}",
        "",
        f"Status **{version['status']}**; aliases: {', '.join(version['aliases']) or 'none'}.",
        "",
        "## Model",
        "",
        *_table(
            ["field", "value"],
            [
                ["artifact", f"{version['artifact_id']} ({facts.model.get('name')})"],
                ["digest", version["artifact_digest"]],
                ["format", facts.model.get("media_type")],
                ["trained by", version["trained_by"]],
                ["registered by", f"{version['registered_by']} at {version['registered_at']}"],
                ["signature", f"OpenSSF model signing bundle {version['signature_id']}"],
                ["scan", f"report {version['scan_id']}: safe"],
                ["SBOM", f"CycloneDX {version['sbom_id']}" if version.get("sbom_id") else "none"],
            ],
        ),
        "",
    ]
    if facts.parameters:
        lines += ["## Parameters", "", *_table(["parameter", "value"], sorted(
            [k, v] for k, v in facts.parameters.items())), ""]  # fmt: skip
    lines += ["## Data sources", ""]
    if facts.sources:
        lines += _table(
            ["source", "pinned SHA-256", "artifact"],
            [[s.get("source") or s["name"], s.get("sha256", ""), s["id"]] for s in facts.sources],
        )
    else:
        lines.append("No provenance: the model was uploaded, not produced by a pipeline.")
    lines += ["", "## Provenance chain", ""]
    lines += _table(
        ["artifact", "kind", "status", "signed by"],
        [[c["name"], c["kind"], c["status"], c.get("signer") or c["creator"]] for c in facts.chain],
    )
    lines.append("")
    for title, report in facts.reports.items():
        lines += [f"## {title}", "", "```", _summary(report), "```", ""]
    evaluation = facts.evaluation or {}
    metrics = evaluation.get("metrics", {})
    lines += ["## Metrics", ""]
    lines += _table(["metric", "value"], [[k, v] for k, v in sorted(metrics.items())]) if metrics \
        else ["No evaluation report."]  # fmt: skip
    lines.append("")
    for attribute in evaluation.get("fairness", {}).get("attributes", []):
        lines += [f"### Fairness by {attribute['attribute']}", ""]
        lines += _table(
            ["group", "count", "selection rate", "TPR", "FPR", "in the gaps"],
            [[g["group"], g.get("count"), g.get("selection_rate"), g.get("true_positive_rate"),
              g.get("false_positive_rate"), _gated(g)] for g in attribute["groups"]],
        )  # fmt: skip
        intervals = attribute.get("intervals", {})
        lines += [
            "",
            f"Demographic-parity difference {attribute['demographic_parity_difference']:.4g} "
            f"{_interval(intervals.get('demographic_parity_difference'))}, ratio "
            f"{attribute['demographic_parity_ratio']:.4g}; equalised-odds difference "
            f"{attribute['equalized_odds_difference']:.4g} "
            f"{_interval(intervals.get('equalized_odds_difference'))}.",
            "",
        ]
    robustness = evaluation.get("robustness") or []
    if robustness:
        lines += ["### Robustness", ""]
        lines += _table(
            ["budget (std)", "clean accuracy", "robust accuracy", "attacks (success rate)"],
            [[r["epsilon"], r["clean_accuracy"], r["robust_accuracy"],
              ", ".join(f"{a['attack']} {a['success_rate']:.3g}" for a in r["attacks"])]
             for r in robustness],
        )  # fmt: skip
        lines.append("")
    privacy = evaluation.get("privacy")
    if privacy:
        lines += ["### Privacy risk (membership inference)", ""]
        lines += _table(
            ["attack", "AUC", "advantage"],
            [[a["attack"], a["auc"], a["advantage"]] for a in privacy["attacks"]],
        )
        lines += ["", f"Outputs: {privacy.get('hardening', 'none')}.", ""]
    lines += ["## Gates", ""]
    for alias, checks in facts.gates.items():
        lines += [f"### {alias}", ""]
        lines += _table(
            ["check", "requirement", "measured", "result"],
            [[c["check"], c["requirement"], c["measured"], "pass" if c["passed"] else "fail"]
             for c in checks],
        )  # fmt: skip
        lines.append("")
    lines += ["## Limitations", "", *[f"- {item}" for item in facts.limitations], ""]
    return "\n".join(lines)


_RATE_NAMES = {"selection_rate": "selection", "true_positive_rate": "TPR",
               "false_positive_rate": "FPR"}  # fmt: skip


def _gated(group: dict[str, Any]) -> str:
    """Which of a group's rates the gaps use (rates on too few rows are only listed)."""
    counted = group.get("counted")
    if counted is None:
        return "all"
    return ", ".join(_RATE_NAMES.get(c, c) for c in counted) or "none (too few rows)"


def _interval(bounds: list[float] | None) -> str:
    return f"(95% CI {bounds[0]:.3g} to {bounds[1]:.3g})" if bounds else ""


def _summary(report: Any) -> str:
    import json

    text = json.dumps(report, indent=1, sort_keys=True, default=str)
    return text if len(text) < 4000 else text[:4000] + "\n…"


def _plots(facts: CardFacts) -> list[tuple[str, str]]:
    """(title, base64 PNG) for the fairness and robustness figures."""
    evaluation = facts.evaluation or {}
    figures: list[tuple[str, str]] = []
    for attribute in evaluation.get("fairness", {}).get("attributes", []):
        groups = attribute["groups"]
        figure, axis = pages.figure(6, 2.8)
        labels = [g["group"] for g in groups]
        positions = range(len(groups))
        width = 0.27
        for offset, key in ((-width, "selection_rate"), (0, "true_positive_rate"),
                            (width, "false_positive_rate")):  # fmt: skip
            axis.bar([p + offset for p in positions], [g.get(key) or 0 for g in groups], width,
                     label=key.replace("_", " "))  # fmt: skip
        axis.set_xticks(list(positions), labels, rotation=20, fontsize=8)
        axis.set_ylim(0, 1)
        axis.legend(fontsize=7)
        axis.set_title(f"Rates by {attribute['attribute']}", fontsize=10)
        figures.append((f"Fairness by {attribute['attribute']}", pages.png(figure)))
    robustness = evaluation.get("robustness") or []
    if robustness:
        figure, axis = pages.figure(5, 2.8)
        budgets = [r["epsilon"] for r in robustness]
        axis.plot(budgets, [r["robust_accuracy"] for r in robustness], marker="o", label="robust")
        axis.plot(budgets, [r["clean_accuracy"] for r in robustness], linestyle="--",
                  label="clean")  # fmt: skip
        axis.set_xlabel("budget (standard deviations per feature)")
        axis.set_ylabel("accuracy")
        axis.set_ylim(0, 1)
        axis.legend(fontsize=7)
        figures.append(("Robust accuracy by budget", pages.png(figure)))
    return figures


def to_html(facts: CardFacts) -> str:
    """The card as one self-contained HTML page (the Markdown, rendered, plus plots)."""
    body = []
    in_table = False
    for line in markdown(facts).splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split(" | ")]
            if set(line) <= {"|", "-"}:
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip() and line != "```":
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    body.extend(pages.image(title, encoded) for title, encoded in _plots(facts))
    return pages.page(f"Model card: {facts.name} v{facts.version['version']}", body)
