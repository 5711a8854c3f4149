"""The app as a whole: health, OpenAPI, and the uvicorn factory."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from api_support import Api, assert_problem, serve

from cityward.adapters.storage.database import create_db_engine
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.bootstrap import Platform
from cityward.config import load_settings
from cityward.entrypoints.api.app import app_factory, create_app


def test_healthz_docs_and_openapi_are_open(api: Api) -> None:
    with api.client() as anonymous:
        health = anonymous.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "database": "ok", "initialized": True}
        assert anonymous.get("/docs").status_code == 200
        spec = anonymous.get("/openapi.json").json()
    assert "/api/v1/devices/import" in spec["paths"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    unauthorized = spec["paths"]["/api/v1/devices"]["get"]["responses"]["401"]["content"]
    assert list(unauthorized) == ["application/problem+json"]
    upload = spec["paths"]["/api/v1/devices/import"]["post"]["requestBody"]["content"]
    assert set(upload) == {"text/csv", "application/json"}


def test_docs_loads_only_what_this_server_serves_under_its_csp(api: Api) -> None:
    """/docs names no other site and no inline script; every file it loads is here."""
    import re

    with api.client() as anonymous:
        page = anonymous.get("/docs")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "<script>" not in page.text and "//" not in re.sub(r"<!doctype[^>]*>", "", page.text, flags=re.I)
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/docs/init.js"} <= set(sources)
        for source in sources:
            loaded = anonymous.get(source)
            assert loaded.status_code == 200, source
            if source.endswith(".js"):
                assert "javascript" in loaded.headers["content-type"]
        assert "SwaggerUIBundle" in anonymous.get("/docs/init.js").text
        assert anonymous.get("/redoc").status_code == 404  # no page that the CSP would blank


def test_healthz_reports_an_uninitialized_installation(platform: Platform) -> None:
    with serve(create_app(platform)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/healthz").json()["initialized"] is False


def test_an_unreachable_database_is_503_not_500(tmp_path: Path) -> None:
    # A port nothing listens on: connecting fails at once.
    db_url = "postgresql+psycopg://nobody@127.0.0.1:9/nowhere?connect_timeout=2"
    engine = create_db_engine(db_url)
    settings = load_settings(database_url=db_url, secret_key_file=tmp_path / "key")
    down = Platform(settings, engine, UnitOfWorkFactory(engine))
    try:
        with serve(create_app(down)) as url, httpx.Client(base_url=url, timeout=30) as client:
            health = client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["database"] == "unreachable"
            assert "nobody" not in health.text  # no connection details to anonymous callers
            response = client.get("/api/v1/devices", headers={"Authorization": "Bearer cw_ab_cd"})
            assert_problem(response, 503)
            assert "127.0.0.1" not in response.text and "nobody" not in response.text
    finally:
        engine.dispose()


def test_app_factory_builds_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CITYWARD_DATABASE_URL", f"sqlite:///{tmp_path / 'factory.db'}")
    monkeypatch.setenv("CITYWARD_SECRET_KEY_FILE", str(tmp_path / "key"))
    with serve(app_factory()) as url, httpx.Client(base_url=url) as client:
        assert client.get("/healthz").json() == {"status": "ok", "database": "ok",
                                                 "initialized": False}
        assert_problem(client.get("/api/v1/devices"), 401)
    assert (tmp_path / "factory.db").exists()
