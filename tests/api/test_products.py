"""/api/v1/products: declare products and relabels, list with filters, page, show."""

from __future__ import annotations

import httpx
from api_support import Api, assert_problem, make_org


def _save(client: httpx.Client, **product: object) -> httpx.Response:
    return client.post("/api/v1/products", json=product)


def test_save_creates_then_updates_by_brand_and_model(admin: httpx.Client) -> None:
    created = _save(admin, brand="Acme", model="AL-100", kind="streetlight", min_firmware="2.0.1",
                    end_of_support="2030-12-31")
    assert created.status_code == 200, created.text
    product = created.json()
    assert (product["origin_status"], product["version_scheme"]) == ("unknown", "semver")
    assert product["end_of_support"] == "2030-12-31" and product["devices"] == 0

    updated = _save(admin, brand="acme", model="al-100", min_firmware="2.1.0").json()
    assert updated["id"] == product["id"] and updated["min_firmware"] == "2.1.0"
    shown = admin.get(f"/api/v1/products/{product['id']}").json()
    assert shown == updated


def test_relabels_resolve_to_the_true_manufacturer(admin: httpx.Client) -> None:
    _save(admin, brand="Acme", model="AL-100", origin_brand="Acme", origin_model="AL-100")
    _save(admin, brand="Brightway", model="SL-1", origin_brand="Acme", origin_model="AL-100")
    _save(admin, brand="CityLite", model="C1", origin_brand="Brightway", origin_model="SL-1")
    _save(admin, brand="Vista", model="VC-9")
    acme = admin.get("/api/v1/products", params={"manufacturer": "acme"}).json()
    assert [(p["brand"], p["origin_status"]) for p in acme["items"]] == [
        ("Acme", "original"), ("Brightway", "relabeled"), ("CityLite", "relabeled")]
    assert acme["items"][2]["chain"] == ["CityLite C1", "Brightway SL-1", "Acme AL-100"]
    unknown = admin.get("/api/v1/products", params={"origin_status": "unknown"}).json()
    assert [p["brand"] for p in unknown["items"]] == ["Vista"]


def test_bad_products_are_422_or_404(admin: httpx.Client) -> None:
    problem = assert_problem(_save(admin, brand="Acme", model="X", kind="toaster"), 422)
    assert [e["field"] for e in problem["errors"]] == ["kind"]
    problem = assert_problem(_save(admin, brand="Acme", model="X", origin_brand="Acme"), 422)
    assert [e["field"] for e in problem["errors"]] == ["origin_model"]
    assert_problem(_save(admin, brand="Acme", model="X", origin_brand="Nobody",
                         origin_model="Y"), 404)
    assert_problem(_save(admin, brand="Acme", model="X", colour="red"), 422)
    assert_problem(_save(admin, model="X"), 422)
    assert_problem(admin.get("/api/v1/products/999999"), 404)
    assert_problem(admin.get("/api/v1/products/99999999999999999999"), 422)
    assert_problem(admin.get("/api/v1/products/abc"), 422)


def test_who_may_declare_products(api: Api, admin: httpx.Client) -> None:
    make_org(admin, "Acme", "manufacturer")
    make_org(admin, "Alpha Integration", "integrator")
    with api.client(api.token("Acme", "operator")) as acme:
        assert _save(acme, brand="Acme", model="AL-200").status_code == 200
        assert_problem(_save(acme, brand="Vista", model="VC-9"), 403)  # not its brand
    with api.client(api.token("Alpha Integration")) as alpha:
        assert_problem(_save(alpha, brand="Acme", model="AL-300"), 403)
        assert alpha.get("/api/v1/products").json()["total"] == 1  # but may read the catalog
    with api.client(api.token("Springfield", "viewer")) as viewer:
        assert_problem(_save(viewer, brand="Acme", model="AL-300"), 403)


def test_products_page_with_a_cursor(admin: httpx.Client) -> None:
    for i in range(7):
        _save(admin, brand="Vista", model=f"VC-{i}")
    seen: list[str] = []
    after = None
    while True:
        page = admin.get("/api/v1/products", params={"limit": 3, **({"after": after} if after else {})}).json()
        assert page["total"] == 7 and len(page["items"]) <= 3
        seen += [p["model"] for p in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == [f"VC-{i}" for i in range(7)]
    assert_problem(admin.get("/api/v1/products", params={"after": "garbage!"}), 422)
