"""The simulated city's vulnerability intelligence: CSAF advisories, a CVE record, a KEV catalog
and EPSS scores written for its fictional products, in the real formats.

What the demo shows with them:
- an ODM's advisory (Quarrow QC-410 cameras) that reaches the brands relabeling it (Orvanta OR-CAM4,
  Cobaltline CL-Eye 4), which publish nothing themselves; its CVE is in the KEV catalog;
- a traffic-controller advisory (Brindlecore BC-TX9) with a version range and a vendor fix;
- a CVE record against Kestrelnet KN-G5 gateways (a component flaw, every version before 4.2.5)
  and the manufacturer's VEX statement that 4.2.0 and later do not run the vulnerable code: only
  the older gateways stay affected.

Everything here is fictional, including the CVE numbers (CVE-2026-9xxxx, chosen far above the
ranges CNAs assign), and marked so in every document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cvss import CVSS3

from cityward.sim.city import product_releases
from cityward.sim.profile import Profile

DATE = "2026-11-20T00:00:00.000Z"
ODM_CVE = "CVE-2026-90001"
TRAFFIC_CVE = "CVE-2026-90002"
GATEWAY_CVE = "CVE-2026-90003"
ODM_ADVISORY = "QRW-SA-2026-001"
NOTE = "Fictional: written for cityward's simulated city Port Aurelia; no real product or vulnerability."


def _score(vector: str) -> dict[str, Any]:
    c = CVSS3(vector)
    return {"version": "3.1", "vectorString": vector, "baseScore": float(c.base_score),
            "baseSeverity": c.severities()[0].upper()}


def _doc(category: str, publisher: str, tracking_id: str, title: str, *, slug: str) -> dict[str, Any]:
    return {
        "category": category, "csaf_version": "2.0", "lang": "en", "title": title,
        "distribution": {"tlp": {"label": "WHITE"}},
        "notes": [{"category": "legal_disclaimer", "title": "Fictional", "text": NOTE}],
        "publisher": {"category": "vendor", "name": publisher,
                      "namespace": f"https://{slug}.port-aurelia.example"},
        "references": [{"category": "self", "summary": "This advisory",
                        "url": f"https://{slug}.port-aurelia.example/csaf/{tracking_id.lower()}.json"}],
        "tracking": {"id": tracking_id, "status": "final", "version": "1", "initial_release_date": DATE,
                     "current_release_date": DATE,
                     "revision_history": [{"date": DATE, "number": "1", "summary": "Initial release"}]},
    }


def _vendor_advisory(publisher: str, slug: str, tracking_id: str, title: str, model: str, cve: str,
                     affected: str, fixed: str, vector: str, details: str) -> dict[str, Any]:
    return {
        "document": _doc("csaf_security_advisory", publisher, tracking_id, title, slug=slug),
        "product_tree": {"branches": [{"category": "vendor", "name": publisher, "branches": [{
            "category": "product_name", "name": model, "branches": [
                {"category": "product_version_range", "name": affected,
                 "product": {"product_id": "CSAFPID-0001", "name": f"{publisher} {model} {affected}",
                             "product_identification_helper": {"model_numbers": [model]}}},
                {"category": "product_version", "name": fixed,
                 "product": {"product_id": "CSAFPID-0002", "name": f"{publisher} {model} {fixed}",
                             "product_identification_helper": {"model_numbers": [model]}}},
            ]}]}]},
        "vulnerabilities": [{
            "cve": cve, "title": title,
            "notes": [{"category": "description", "title": "Description", "text": details}],
            "product_status": {"known_affected": ["CSAFPID-0001"], "fixed": ["CSAFPID-0002"]},
            "remediations": [{"category": "vendor_fix", "details": f"Update to {fixed} or later.",
                              "product_ids": ["CSAFPID-0001"],
                              "url": f"https://{slug}.port-aurelia.example/firmware"}],
            "scores": [{"cvss_v3": _score(vector), "products": ["CSAFPID-0001"]}],
        }],
    }


def _gateway_vex(fixed_from: str) -> dict[str, Any]:
    doc = _doc("csaf_vex", "Kestrelnet", "KN-VEX-2026-003", f"KN-G5 {fixed_from} and later: not affected by "
               f"{GATEWAY_CVE}", slug="kestrelnet")
    return {
        "document": doc,
        "product_tree": {"branches": [{"category": "vendor", "name": "Kestrelnet", "branches": [{
            "category": "product_name", "name": "KN-G5", "branches": [{
                "category": "product_version_range", "name": f">= {fixed_from}",
                "product": {"product_id": "CSAFPID-0001", "name": f"Kestrelnet KN-G5 >= {fixed_from}",
                            "product_identification_helper": {"model_numbers": ["KN-G5"]}}}]}]}]},
        "vulnerabilities": [{
            "cve": GATEWAY_CVE, "title": "Routing daemon parser overflow",
            "notes": [{"category": "description", "title": "Description",
                       "text": "The vulnerable parser of the routing component is compiled out of KN-G5 firmware "
                               f"since {fixed_from}."}],
            "product_status": {"known_not_affected": ["CSAFPID-0001"]},
            "flags": [{"label": "vulnerable_code_not_in_execute_path", "product_ids": ["CSAFPID-0001"]}],
            "threats": [{"category": "impact", "product_ids": ["CSAFPID-0001"],
                         "details": "The routing component's parser is not built into these versions."}],
        }],
    }


def _gateway_record(upto: str) -> dict[str, Any]:
    return {
        "dataType": "CVE_RECORD", "dataVersion": "5.1",
        "cveMetadata": {"cveId": GATEWAY_CVE, "assignerShortName": "port-aurelia-cert", "state": "PUBLISHED",
                        "datePublished": "2026-11-18T00:00:00.000Z", "dateUpdated": "2026-11-18T00:00:00.000Z"},
        "containers": {"cna": {
            "title": "Routing daemon parser overflow in KN-G5 gateways",
            "descriptions": [{"lang": "en", "value": f"{NOTE} A crafted routing update overflows a parser buffer."}],
            "affected": [{"vendor": "Kestrelnet", "product": "KN-G5", "defaultStatus": "unaffected",
                          "versions": [{"version": "0", "lessThan": upto, "status": "affected",
                                        "versionType": "custom"}]}],
            "metrics": [{"cvssV3_1": _score("CVSS:3.1/AV:A/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:H")}],
            "references": [{"url": "https://cert.port-aurelia.example/CVE-2026-90003"}],
        }},
    }


def write_advisories(profile: Profile, folder: Path) -> Path:
    """Write the demo's advisory set into `folder` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    cams = product_releases(profile, "Quarrow", "QC-410")
    ctrl = product_releases(profile, "Brindlecore", "BC-TX9")
    gw = product_releases(profile, "Kestrelnet", "KN-G5")
    cam_fix, ctrl_fix, gw_upto, gw_vex = cams[-2], ctrl[-3], gw[-2], gw[2]
    docs: dict[str, Any] = {
        "quarrow-qrw-sa-2026-001.json": _vendor_advisory(
            "Quarrow", "quarrow", ODM_ADVISORY, "Unauthenticated command injection in QC-410 camera web server",
            "QC-410", ODM_CVE, f"< {cam_fix}", cam_fix, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "A crafted request to the web server runs commands as root, without authentication."),
        "brindlecore-bc-sa-2026-07.json": _vendor_advisory(
            "Brindlecore", "brindlecore", "BC-SA-2026-07", "Signal plan upload accepts unsigned files", "BC-TX9",
            TRAFFIC_CVE, f">= {ctrl[1]} | < {ctrl_fix}", ctrl_fix,
            "CVSS:3.1/AV:A/AC:L/PR:L/UI:N/S:U/C:N/I:H/A:H",
            "An authenticated user on the controller network can upload an unsigned signal plan."),
        "kestrelnet-kn-vex-2026-003.json": _gateway_vex(gw_vex),
        "cve-2026-90003.json": _gateway_record(gw_upto),
    }
    for name, doc in docs.items():
        (folder / name).write_text(json.dumps(doc, indent=1), encoding="utf-8")
    kev = {"title": "CISA Catalog of Known Exploited Vulnerabilities (Port Aurelia demo excerpt)",
           "catalogVersion": "2026.11.20", "dateReleased": DATE, "count": 1, "vulnerabilities": [{
               "cveID": ODM_CVE, "vendorProject": "Quarrow", "product": "QC-410 cameras",
               "vulnerabilityName": "Quarrow QC-410 Command Injection Vulnerability", "dateAdded": "2026-11-19",
               "shortDescription": NOTE, "requiredAction": "Apply mitigations per vendor instructions.",
               "dueDate": "2026-12-10", "knownRansomwareCampaignUse": "Unknown", "notes": "", "cwes": ["CWE-78"]}]}
    (folder / "known_exploited_vulnerabilities.json").write_text(json.dumps(kev, indent=1), encoding="utf-8")
    (folder / "epss_scores.csv").write_text(
        "#model_version:v2025.03.14,score_date:2026-11-20T00:00:00+0000\ncve,epss,percentile\n"
        f"{ODM_CVE},0.94120,0.99910\n{TRAFFIC_CVE},0.01210,0.78000\n{GATEWAY_CVE},0.00410,0.51000\n",
        encoding="utf-8")
    return folder
