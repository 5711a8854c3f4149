"""Every error the API returns, as RFC 9457 problem details, mapped in this one place.

cityward's error tree (cityward.errors) gives each class its status; FastAPI's request validation
and Starlette's routing errors are rendered the same way, and anything unexpected becomes a 500
that names no internals (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from cityward.domain.rollouts import RolloutStateConflict
from cityward.entrypoints.api.schemas import ProblemItemOut, ProblemOut
from cityward.errors import CitywardError, InvalidInput, Problem, StorageUnavailable, problem_type

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
MAX_ERRORS = 200  # listed per response; the rest are counted in `more`


def status_of(exc: CitywardError) -> int:
    """Each error class names its status (cityward.errors), so the CLI's exit codes and these agree."""
    return exc.http_status


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str,
    *,
    errors: Sequence[ProblemItemOut] = (),
    more: int = 0,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response:
    html = getattr(request.app.state, "html_error", None)  # the dashboard's pages answer in HTML
    if html is not None:
        page: Response | None = html(request, status, title, detail, hint)
        if page is not None:
            return page
    body = ProblemOut(
        type=problem_type(title), title=title, status=status, detail=detail,
        instance=request.url.path, hint=hint, errors=list(errors[:MAX_ERRORS]),
        more=more + max(len(errors) - MAX_ERRORS, 0),
    )
    # Optional members are left out when empty; each error keeps row and field (maybe null), and
    # names its source only when it has one (e.g. the policy rule a problem is in).
    content = {k: v for k, v in body.model_dump().items() if v is not None}
    for item in content.get("errors", []):
        if item.get("source") is None:
            item.pop("source", None)
    content.update(extensions or {})  # RFC 9457 extension members, e.g. a rollout's state
    return JSONResponse(content, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _items(problems: Iterable[Problem]) -> list[ProblemItemOut]:
    return [ProblemItemOut(row=p.row, field=p.field, source=p.source, message=p.message) for p in problems]


def _www_authenticate(request: Request) -> dict[str, str]:
    # RFC 6750: name the error only when a token was presented.
    if request.headers.get("authorization"):
        return {"WWW-Authenticate": 'Bearer realm="cityward", error="invalid_token"'}
    return {"WWW-Authenticate": 'Bearer realm="cityward"'}


async def _cityward_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CitywardError)
    status = status_of(exc)
    if status == 500:
        return await _unexpected(request, exc)
    if isinstance(exc, StorageUnavailable):
        # Its message names the database host and user; the caller may not even be signed in.
        log.warning("database unavailable serving %s: %s", request.url.path, exc.message)
        return problem_response(request, status, exc.title,
                                "the database is unavailable; try again shortly")
    headers = _www_authenticate(request) if status == 401 else None
    if isinstance(exc, InvalidInput):
        return problem_response(request, status, exc.title, exc.message,
                                errors=_items(exc.problems), more=exc.more, hint=exc.hint)
    if isinstance(exc, RolloutStateConflict):  # 409 naming the state and the refused command
        return problem_response(request, status, exc.title, exc.message, hint=exc.hint, extensions={
            "rollout": exc.rollout_id, "state": exc.state.value, "command": exc.command.value})
    return problem_response(request, status, exc.title, exc.message, hint=exc.hint,
                            headers=headers)


def _location(loc: Sequence[Any]) -> str:
    # ("query", "limit") → "limit"; ("body", "maintenance_window", "cron") → "maintenance_window.cron"
    parts = [str(p) for p in loc[1:]] if len(loc) > 1 else [str(p) for p in loc]
    return ".".join(parts)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    items = []
    for err in exc.errors():
        message = str(err.get("msg", "invalid value"))
        ctx = err.get("ctx") or {}
        field = _location(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            field = "body"  # its location is a character offset, not a field
            if isinstance(ctx.get("error"), str):
                message = f"{message}: {ctx['error']}"
        # `input` is deliberately not echoed: it may be huge, or a secret sent in the wrong place.
        items.append(ProblemItemOut(field=field, message=message))
    count = len(items)
    return problem_response(
        request, 422, InvalidInput.title,
        f"the request has {count} invalid value{'s' if count != 1 else ''}", errors=items,
    )


# Raised by routing (404, 405) and by the body caps (413 and 422, see uploads.BodyLimit).
_HTTP_TITLES = {404: "Not found", 405: "Method not allowed", 413: "Payload too large",
                422: InvalidInput.title}  # 422: a JSON body over a parser limit (uploads.BodyLimit)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    title = _HTTP_TITLES.get(exc.status_code, "HTTP error")
    return problem_response(request, exc.status_code, title, str(exc.detail),
                            headers=dict(exc.headers) if exc.headers else None)


async def _disconnected(request: Request, exc: Exception) -> Response:
    # The client went away mid-upload: nobody to answer and nothing wrong with the server.
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return problem_response(request, 400, "Client disconnected", "the request ended early")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error serving %s %s", request.method, request.url.path,
                  exc_info=exc)
    return problem_response(request, 500, "Internal error",
                            "an unexpected error occurred; it has been logged")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CitywardError, _cityward_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _disconnected)
    app.add_exception_handler(Exception, _unexpected)
    _document_problems(app)


def _document_problems(app: FastAPI) -> None:
    """Error responses are problem+json only; FastAPI would also list them as plain JSON."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    for response in operation.get("responses", {}).values():
                        content = response.get("content", {})
                        if PROBLEM_JSON in content:
                            content.pop("application/json", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _doc(description: str) -> dict[str, Any]:
    return {"model": ProblemOut, "description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemOut"}}}}


Responses = dict[int | str, dict[str, Any]]

# For OpenAPI: the problems any authenticated endpoint may answer with.
COMMON_RESPONSES: Responses = {
    401: _doc("no, invalid, expired or revoked bearer token"),
    403: _doc("the caller's role or organization does not allow this"),
    422: _doc("invalid input; `errors` lists each value (row, field, message)"),
    503: _doc("the database is unreachable or cityward is not initialized"),
}
NOT_FOUND: Responses = {404: _doc("not found (or not visible to the caller)")}
CONFLICT: Responses = {409: _doc("contradicts stored data")}
ROLLOUT_STATE: Responses = {409: _doc("the rollout's state does not allow this command (e.g. it has finished): "
                                      "`state` and `command` name both")}
TOO_LARGE: Responses = {413: _doc("the request body is over the cap")}
