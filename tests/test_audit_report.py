"""The HTML audit report: one self-contained file, values escaped, a trend over past runs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from cityward.entrypoints.reports import html
from cityward.services.audit import AuditReport, Finding, Score, TrendPoint

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _report() -> AuditReport:
    hostile = Finding("SL-1", "FW-001", "Firmware <b>old</b>", "high",
                      {"firmware_version": "<script>alert(1)</script>"}, "Acme & Sons", "new")
    waived = Finding("SL-2", "CRED-001", "Default password", "critical", {"credential_state": "default"}, None,
                     "persisting", waiver=7)
    return AuditReport(run_id=3, policy="baseline", at=NOW, devices=2, findings=[hostile, waived],
                       resolved=[("SL-9", "SVC-001")], by_rule=[("CRED-001", "Default password", "critical", 1),
                                                                ("FW-001", "Firmware <b>old</b>", "high", 1)],
                       scores={"zone": [Score("Harbour", 2, 1)]}, version=4, not_acknowledged=["Bolt Systems"])


def test_report_is_self_contained_and_escaped() -> None:
    history = [TrendPoint(i, NOW - timedelta(days=3 - i), 40.0 + 10 * i, 5, 1, 0) for i in range(1, 4)]
    page = html.render(_report(), history, "Port Aurelia")
    assert page.startswith("<!doctype html>") and "</html>" in page
    assert not re.search(r"(src|href)\s*=|https?://|<script", page), "no external resources, no script"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "Firmware &lt;b&gt;old&lt;/b&gt;" in page
    assert "Acme &amp; Sons" in page and "Bolt Systems" in page and "version 4" in page
    assert page.count("<circle") == 3 and "<polyline" in page  # one point per past run
    assert ">waived<" in page and "SL-9 (SVC-001)" in page
