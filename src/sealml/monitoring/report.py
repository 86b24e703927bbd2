"""The HTML page of a monitoring run: the verdict per column, the alerts, a plot of
reference against current for each drifted column, and the prediction distribution."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..governance import pages
from .alerts import Alert
from .drift import ColumnDrift, DriftReport

if TYPE_CHECKING:
    import pandas as pd

MAX_BARS = 15


def _plot(column: ColumnDrift, reference: pd.Series, current: pd.Series) -> str:
    import pandas as pd

    figure, axis = pages.figure(6, 2.6)
    if column.kind == "numeric" and column.statistic == "wasserstein_norm":
        ref = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(float)
        cur = pd.to_numeric(current, errors="coerce").dropna().to_numpy(float)
        both = np.concatenate([ref, cur])
        low, high = np.quantile(both, [0.005, 0.995]) if len(both) else (0.0, 1.0)
        bins = np.linspace(low, high if high > low else low + 1, 40)
        axis.hist(ref, bins=bins, density=True, alpha=0.5, label="reference")
        axis.hist(cur, bins=bins, density=True, alpha=0.5, label="current")
    else:
        shares = pd.DataFrame(
            {
                "reference": reference.astype(str).value_counts(normalize=True),
                "current": current.astype(str).value_counts(normalize=True),
            }
        ).fillna(0.0)
        shares = shares.sort_values("reference", ascending=False).head(MAX_BARS)
        positions = np.arange(len(shares))
        axis.bar(positions - 0.2, shares["reference"], 0.4, label="reference")
        axis.bar(positions + 0.2, shares["current"], 0.4, label="current")
        axis.set_xticks(positions, [str(i)[:14] for i in shares.index], rotation=30, fontsize=7)
    axis.legend(fontsize=7)
    axis.set_title(f"{column.column}: {column.statistic} {column.score:.3f}", fontsize=10)
    return pages.png(figure)


def to_html(
    name: str,
    version: int,
    report: DriftReport,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    alerts: Sequence[Alert] = (),
    figures: dict[str, Any] | None = None,
) -> str:
    """One self-contained page (plots embedded as PNG)."""
    body = [
        f"<h1>Drift: {html.escape(name)} v{version}</h1>",
        f"<p>{report.current_rows} current rows against {report.reference_rows} reference "
        f"rows, mode {html.escape(report.mode)}. Drifted: "
        f"{html.escape(', '.join(report.drifted) or 'none')}.</p>",
    ]
    if alerts:
        body.append("<h2>Alerts</h2>")
        body.append(pages.table(["severity", "rule", "figure", "value", "threshold"],
                                ([a.severity, a.rule, a.metric, f"{a.value:g}",
                                  f"{a.threshold:g}"] for a in alerts)))  # fmt: skip
    if figures:
        body.append("<h2>Figures</h2>")
        body.append(pages.table(["figure", "value"], ([k, f"{v:g}"] for k, v in figures.items())))
    body.append("<h2>Columns</h2>")
    body.append(
        pages.table(
            ["column", "kind", "statistic", "score", "threshold", "p (adjusted)", "PSI", "drifted"],
            (
                [c.column, c.kind, c.statistic, f"{c.score:.4f}", f"{c.threshold:g}",
                 "-" if c.p_adjusted is None else f"{c.p_adjusted:.2g}",
                 "-" if c.psi is None else f"{c.psi:.3f}", "yes" if c.drifted else ""]
                for c in report.columns
            ),
            bad=7,
        )
    )  # fmt: skip
    plotted = [c for c in report.columns if c.drifted and c.column != "prediction"]
    by_name = {c.column: c for c in report.columns}
    if "prediction" in by_name:
        plotted.append(by_name["prediction"])
    for column in plotted:
        title = "Predictions" if column.column == "prediction" else f"{column.column} (drifted)"
        body.append(pages.image(title, _plot(column, reference[column.column],
                                             current[column.column])))  # fmt: skip
    return pages.page(f"Drift: {name} v{version}", body)
