"""The HTML audit report: one self-contained file, values escaped, a trend over past runs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import polars as pl

from cityward.entrypoints.reports import html
from cityward.services.audit import FINDING_SCHEMA, PAIR_SCHEMA, AuditReport, Score, TrendPoint

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _report() -> AuditReport:
    findings = pl.DataFrame([
        ("SL-1", "FW-001", "Firmware <b>old</b>", "high", json.dumps({"firmware_version": "<script>alert(1)</script>"}),
         "Acme & Sons", "new", None),
        ("SL-2", "CRED-001", "Default password", "critical", json.dumps({"credential_state": "default"}), None,
         "persisting", 7),
    ], schema=FINDING_SCHEMA, orient="row")
    return AuditReport(run_id=3, policy="baseline", at=NOW, devices=2, findings=findings,
                       resolved=pl.DataFrame([("SL-9", "SVC-001")], schema=PAIR_SCHEMA, orient="row"),
                       by_rule=[("CRED-001", "Default password", "critical", 1),
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
