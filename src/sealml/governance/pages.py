"""Self-contained HTML pages with embedded plots (model cards, monitoring reports)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable
from typing import Any

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
    "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;"
    "padding:.2rem .5rem;font-size:.9rem;text-align:left}th{background:#f3f3f3}"
    "p{white-space:pre-wrap}.bad{color:#b00020;font-weight:600}"
)


def figure(width: float, height: float) -> tuple[Any, Any]:
    """A new figure with one plot area, as (figure, axes).

    matplotlib's object API, not pyplot: no global figure registry to close, so pages can
    be drawn on several threads at once (the dashboard) and nothing is left behind.
    """
    from matplotlib.figure import Figure

    drawn = Figure(figsize=(width, height))
    return drawn, drawn.subplots()


def png(figure: Any) -> str:
    """A figure as base64 PNG."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image(title: str, encoded: str) -> str:
    safe = html.escape(title)
    return f'<h3>{safe}</h3><img alt="{safe}" src="data:image/png;base64,{encoded}">'


def table(headers: list[str], rows: Iterable[list[Any]], bad: int | None = None) -> str:
    """An HTML table; cells are escaped; a row whose column *bad* is truthy is marked."""
    parts = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"]
    for row in rows:
        marked = ' class="bad"' if bad is not None and row[bad] else ""
        cells = "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
        parts.append(f"<tr{marked}>{cells}</tr>")
    return "".join(parts) + "</table>"


def page(title: str, body: Iterable[str]) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
