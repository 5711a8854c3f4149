"""/api/v1/orgs: the city creates partners; a partner sees itself and the city."""

from __future__ import annotations

import httpx
from api_support import CITY, Api, assert_problem, make_org


def test_create_and_list(api: Api, admin: httpx.Client) -> None:
    acme = make_org(admin, "Acme", "manufacturer", contact_email="psirt@acme.example")
    assert (acme["kind"], acme["brand"]) == ("manufacturer", "Acme")  # brand defaults to name
    make_org(admin, "Alpha Integration", "integrator")
    names = [o["name"] for o in admin.get("/api/v1/orgs").json()["items"]]
    assert names == ["Acme", "Alpha Integration", CITY]
    integrators = admin.get("/api/v1/orgs", params={"kind": "integrator"}).json()["items"]
    assert [o["name"] for o in integrators] == ["Alpha Integration"]
    with api.client(api.token("Alpha Integration")) as alpha:
        seen = [o["name"] for o in alpha.get("/api/v1/orgs").json()["items"]]
        assert seen == ["Alpha Integration", CITY]
        assert_problem(alpha.post("/api/v1/orgs", json={"name": "Mine", "kind": "integrator"}), 403)


def test_a_duplicate_org_is_a_409_problem(admin: httpx.Client) -> None:
    make_org(admin, "Acme", "manufacturer")
    problem = assert_problem(admin.post("/api/v1/orgs", json={"name": "Acme", "kind": "integrator"}),
                             409)
    assert problem["title"] == "Conflict" and "Acme" in problem["detail"]


def test_bad_orgs_are_422(admin: httpx.Client) -> None:
    problem = assert_problem(admin.post("/api/v1/orgs", json={"name": "X", "kind": "club"}), 422)
    assert "club" in problem["detail"]
    problem = assert_problem(admin.post("/api/v1/orgs", json={"kind": "integrator"}), 422)
    assert problem["errors"] == [{"row": None, "field": "name", "message": "Field required"}]
    assert_problem(admin.post("/api/v1/orgs", json={"name": "X", "kind": "integrator",
                                                    "contact_email": "a" * 300}), 422)
    assert_problem(admin.post("/api/v1/orgs", json={"name": "X\u0000", "kind": "integrator",
                                                    "contact_email": "x\u0000@y"}), 422)


def test_orgs_page_with_a_cursor(admin: httpx.Client) -> None:
    for name in ("Delta", "Alpha", "Echo", "Charlie", "Bravo"):
        make_org(admin, name, "integrator")
    names: list[str] = []
    after = None
    while True:
        page = admin.get("/api/v1/orgs", params={"limit": 2, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        names += [o["name"] for o in page.json()["items"]]
        after = page.json()["next_after"]
        if after is None:
            break
    assert names == ["Alpha", "Bravo", "Charlie", "Delta", "Echo", CITY]
