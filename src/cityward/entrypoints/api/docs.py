"""/docs: Swagger UI for the API, entirely from this server.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script; the security
headers every HTML page gets (`default-src 'self'`, see entrypoints/web/app.py) block both, so it
stayed blank. Here the page is plain HTML, Swagger UI's files come from the `fastapi-offline`
distribution (its static folder only) under /docs/assets, and the start-up script is a file of ours.
There is no ReDoc page (it needs inline styles and blob workers) and no OAuth2 redirect (tokens are
bearer tokens pasted into "Authorize").
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
_INIT = Path(__file__).parent / "static" / "swagger-init.js"

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    root = escape(request.scope.get("root_path", ""))
    openapi = escape(f"{request.scope.get('root_path', '')}{request.app.openapi_url}")
    return HTMLResponse(f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(request.app.title)} API</title>
<link rel="stylesheet" href="{root}{ASSETS}/swagger-ui.css">
<link rel="icon" href="{root}{ASSETS}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi="{openapi}"></div>
<script src="{root}{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{root}/docs/init.js"></script>
</body>
</html>
""")


@router.get("/docs/init.js")
def swagger_init() -> FileResponse:
    return FileResponse(_INIT, media_type="text/javascript")


def install_docs(app: FastAPI) -> None:
    """Mount /docs on an app created with FastAPI's own docs pages turned off."""
    app.mount(ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")
    app.include_router(router)
