"""/api/v1/auditlog: API actions are recorded with the token as actor, and the chain verifies."""

from __future__ import annotations

import httpx
from api_support import Api, assert_problem, csv_text, import_csv, make_org, make_zone
from sqlalchemy import text

from cityward.adapters.secretbox import SecretBox
from cityward.services import auditanchors


def test_api_actions_are_logged_and_the_chain_verifies(api: Api, admin: httpx.Client) -> None:
    make_zone(admin, "Harbor")
    make_org(admin, "Alpha Integration", "integrator")
    import_csv(admin, csv_text("id,kind,brand,model,firmware_version,zone",
                               "c-1,camera,Vista,VC-9,1.0,Harbor"), source="harbor.csv")
    token_id = api.admin_token.split("_")[1]
    actor = f"token:{token_id} (test admin)"

    events = admin.get("/api/v1/auditlog").json()["items"]
    actions = [e["action"] for e in events]
    assert actions[:4] == ["devices.imported", "products.created", "orgs.created",
                           "zones.created"]  # newest first
    assert all(e["actor"] == actor for e in events[:4])
    imported = admin.get("/api/v1/auditlog", params={"action": "devices.imported"}).json()["items"]
    assert [(e["target_id"], e["after"]["created"]) for e in imported] == [("harbor.csv", 1)]
    assert admin.get("/api/v1/auditlog", params={"target": "Harbor"}).json()["items"][0][
        "action"] == "zones.created"

    verified = admin.get("/api/v1/auditlog/verify").json()
    assert verified["ok"] is True and verified["first_broken"] is None
    assert verified["events"] == max(e["seq"] for e in events)
    assert verified["head"] == events[0]["hash"]


def test_auditlog_pages_backwards(admin: httpx.Client) -> None:
    for i in range(5):
        make_zone(admin, f"Zone {i}")
    seqs: list[int] = []
    before = None
    while True:
        params = {"limit": 2, **({"before_seq": before} if before else {})}
        page = admin.get("/api/v1/auditlog", params=params).json()
        seqs += [e["seq"] for e in page["items"]]
        before = page["next_before_seq"]
        if before is None:
            break
    assert seqs == list(range(max(seqs), 0, -1))
    assert_problem(admin.get("/api/v1/auditlog", params={"limit": 0}), 422)
    assert_problem(admin.get("/api/v1/auditlog", params={"before_seq": 2**40}), 422)


def test_a_partner_sees_its_own_events_and_cannot_verify(api: Api, admin: httpx.Client) -> None:
    make_zone(admin, "Harbor")
    make_org(admin, "Alpha Integration", "integrator")
    with api.client(api.token("Alpha Integration", name="alpha ops")) as alpha:
        body = csv_text("id,kind,brand,model,firmware_version,zone,maintainer",
                        "a-1,camera,Vista,VC-9,1.0,Harbor,Alpha Integration")
        assert import_csv(alpha, body).status_code == 200
        events = alpha.get("/api/v1/auditlog").json()["items"]
        assert {e["action"] for e in events} == {"devices.imported", "products.created"}
        assert all(e["actor"].endswith("(alpha ops)") for e in events)
        assert_problem(alpha.get("/api/v1/auditlog/verify"), 403)
    assert admin.get("/api/v1/auditlog/verify").json()["ok"] is True


def test_verify_checks_the_latest_anchor(api: Api, admin: httpx.Client) -> None:
    make_zone(admin, "Harbor")
    settings = api.platform.settings
    assert admin.get("/api/v1/auditlog/verify").json()["anchor"]["status"] == "none"
    made = auditanchors.anchor(api.platform.uow, api.city, auditanchors.signing_key(settings.secret_key_bytes()),
                               settings.audit_anchor_file, recipients=[],
                               box=SecretBox(settings.secret_key_bytes())).anchor
    verified = admin.get("/api/v1/auditlog/verify").json()
    assert verified["ok"] is True and verified["anchor"]["status"] == "ok"
    assert (verified["anchor"]["seq"], verified["anchor"]["head"]) == (made.seq, made.head)
    with api.platform.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq >= :s"), {"s": made.seq})
    cut = admin.get("/api/v1/auditlog/verify").json()
    assert cut["ok"] is False and cut["first_broken"] is None  # the chain alone still holds…
    assert cut["anchor"]["status"] == "failed" and "cut off the tail" in cut["anchor"]["reason"]
