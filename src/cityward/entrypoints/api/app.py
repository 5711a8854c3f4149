"""The REST API: `create_app(platform)` wires routers, auth and problem details around services.

Nothing connects at import time. `uvicorn --factory cityward.entrypoints.api.app:app_factory`
builds the platform from the settings; tests and `cityward serve` pass their own platform.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from cityward import __version__
from cityward.bootstrap import Platform, bootstrap
from cityward.entrypoints.api import (
    auditlog,
    devices,
    discovery,
    organizations,
    policies,
    products,
    rollouts,
    tokens,
    vulns,
    zones,
)
from cityward.entrypoints.api.auth import PlatformDep, current_caller
from cityward.entrypoints.api.docs import install_docs
from cityward.entrypoints.api.problems import COMMON_RESPONSES, install_problem_handlers
from cityward.entrypoints.api.schemas import HealthOut
from cityward.entrypoints.api.uploads import JSON_BODY_LIMIT, BodyLimit
from cityward.entrypoints.web import install_web
from cityward.errors import CitywardError
from cityward.services.organizations import is_initialized

if TYPE_CHECKING:
    from cityward.services.rollout_executor import ExecutorOptions

health = APIRouter(tags=["health"])


@health.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
def healthz(platform: PlatformDep) -> JSONResponse:
    """Open to all (load balancers have no token); says whether the database answers."""
    try:
        with platform.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        initialized = is_initialized(platform.uow)
    except (SQLAlchemyError, CitywardError):
        # No details: this endpoint is unauthenticated, and errors can name hosts and users.
        body = HealthOut(status="unavailable", database="unreachable")
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(HealthOut(status="ok", database="ok", initialized=initialized).model_dump())


def create_app(platform: Platform, *, owns_platform: bool = False,
               executor: ExecutorOptions | None = None, anchor_every_s: float | None = None) -> FastAPI:
    """An app serving `platform`; with `owns_platform` it closes the platform on shutdown. With
    `executor`, the one-machine rollout executor runs beside it from start-up to shutdown, so a
    rollout started through the app is carried out; with `anchor_every_s`, the audit log is anchored
    at start-up and that often (entrypoints/background.py)."""

    @asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[None]:
        background = anchoring = None
        if executor is not None:
            from cityward.entrypoints.background import BackgroundExecutor

            background = BackgroundExecutor(platform, executor)
            running.state.executor = background
            background.start()
        if anchor_every_s:
            from cityward.entrypoints.background import BackgroundAnchors

            anchoring = BackgroundAnchors(platform, anchor_every_s)
            running.state.anchors = anchoring
            anchoring.start()
        try:
            yield
        finally:
            if anchoring is not None:
                await asyncio.to_thread(anchoring.stop)
            if background is not None:
                await asyncio.to_thread(background.stop)
            if owns_platform:
                platform.close()

    app = FastAPI(
        title="cityward",
        version=__version__,
        description="Keep a smart city's connected devices secure, together. Every endpoint "
        "but /healthz takes `Authorization: Bearer <token>`; errors are RFC 9457 problem "
        "details (`application/problem+json`).",
        lifespan=lifespan,
        # FastAPI's pages load Swagger UI from a CDN with an inline script, which the pages' CSP
        # refuses: /docs is served by docs.py from packaged files instead.
        docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
    )
    app.state.platform = platform
    install_problem_handlers(app)
    app.add_middleware(
        BodyLimit, default=JSON_BODY_LIMIT,
        limits={devices.IMPORT_PATH: platform.settings.max_upload_bytes, vulns.IMPORT_PATH: vulns.MAX_UPLOAD},
    )
    # Auth on the router, so no endpoint under /api/v1 can forget it; handlers that need the
    # caller declare it too, and FastAPI resolves it once per request.
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(current_caller)],
                    responses=COMMON_RESPONSES)
    for module in (devices, products, zones, organizations, tokens, auditlog, discovery, policies, rollouts,
                   vulns):
        api.include_router(module.router)
    app.include_router(health)
    app.include_router(api)
    install_docs(app)
    install_web(app)  # the dashboard: pages and sign-in, around the same services
    return app


def app_factory() -> FastAPI:
    """For `uvicorn --factory`: bootstrap from the environment and `cityward.toml`."""
    return create_app(bootstrap(), owns_platform=True)
