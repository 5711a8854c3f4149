"""The audit as one self-contained HTML file: inline CSS and SVG charts, no script, no CDN, so it
can be mailed, archived and opened offline. Jinja2 with autoescaping: every value from devices or
policies is text, never markup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
from jinja2 import Environment, PackageLoader, select_autoescape

from cityward.services.audit import AuditReport, TrendPoint

SEVERITY_COLORS = {"critical": "#9b1c1c", "high": "#d9480f", "medium": "#b08800", "low": "#5c6f82"}
MAX_ROWS = 2000  # findings listed in the page; the JSON report has them all
MAX_RESOLVED = 500


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str
    color: str


def _bars(items: list[Bar], width: int = 560, row: int = 22) -> dict[str, Any]:
    top = max((b.value for b in items), default=1.0) or 1.0
    label_w = 190
    return {"height": row * len(items) + 6, "width": width, "row": row, "label_w": label_w,
            "bars": [{"y": i * row + 3, "w": max(1.0, (width - label_w - 70) * b.value / top), "label": b.label,
                      "text": b.text, "color": b.color} for i, b in enumerate(items)]}


def _trend(points: list[TrendPoint], width: int = 560, height: int = 160) -> dict[str, Any]:
    if not points:
        return {"points": "", "dots": [], "width": width, "height": height}
    pad = 24
    step = (width - 2 * pad) / max(1, len(points) - 1)
    coords = [(pad + i * step, height - pad - (height - 2 * pad) * p.score / 100.0) for i, p in enumerate(points)]
    return {"width": width, "height": height,
            "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in coords),
            "dots": [{"x": x, "y": y, "title": f"run {p.run_id} · {p.at:%Y-%m-%d %H:%M} · score {p.score}"}
                     for (x, y), p in zip(coords, points, strict=True)]}



_ENV = Environment(loader=PackageLoader("cityward.entrypoints.reports", "."),
                   autoescape=select_autoescape(default=True, default_for_string=True))


def render(report: AuditReport, history: list[TrendPoint], city: str) -> str:
    sev = dict(report.findings.filter(pl.col("waiver_id").is_null()).group_by("severity").len().iter_rows())
    rule_bars = [Bar(f"{rid} {title}", n, f"{n:,}", SEVERITY_COLORS[s]) for rid, title, s, n in report.by_rule[:15]]
    charts = [("Top failing rules", _bars(rule_bars))]
    for dim in ("zone", "responsible", "manufacturer", "kind"):
        items = report.scores.get(dim, [])[:12]
        charts.append((f"Score by {dim}", _bars([Bar(s.key, s.score, f"{s.score} ({s.failing}/{s.devices})",
                                                    "#1c5d99") for s in items])))
    return _ENV.get_template("audit.html.j2").render(
        r=report, city=city, t=_trend(history), charts=charts, colors=SEVERITY_COLORS,
        by_severity=[(s, sev[s]) for s in ("critical", "high", "medium", "low") if sev.get(s)],
        new=report.count("new"), waived=report.waived, total=report.findings.height,
        rows=report.finding_list(MAX_ROWS), max_rows=MAX_ROWS,
        resolved=report.resolved.height, resolved_pairs=report.resolved_pairs(MAX_RESOLVED))
