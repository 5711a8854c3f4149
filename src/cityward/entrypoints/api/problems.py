"""Every error the API returns, as RFC 9457 problem details, mapped in this one place.

cityward's error tree (cityward.errors) gives each class its status; FastAPI's request validation
and Starlette's routing errors are rendered the same way, and anything unexpected becomes a 500
that names no internals (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import functools
import logging
import re
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


# Raised by routing (404, 405), by the body caps (413 and 422, see uploads.BodyLimit) and by FastAPI
# when a body cannot be read at all (400, e.g. bytes that are not UTF-8).
_HTTP_TITLES = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 413: "Payload too large",
                422: InvalidInput.title}  # 422: a JSON body over a parser limit (uploads.BodyLimit)


@functools.lru_cache(maxsize=512)
def _template(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)))


def _allowed_methods(request: Request) -> str | None:
    """Every method of the resource, for a 405's `Allow` (RFC 9110), from the OpenAPI document.
    Starlette names only those of the first route whose path matched, and FastAPI makes one route
    per method: `DELETE /orgs` would be told `Allow: GET` though `POST` is served too, and
    `OPTIONS /advisories/match` the methods of `/advisories/{id}`. The resource is the most
    specific documented path that matches (the fewest parameters); None for undocumented paths
    (the dashboard's pages), which keep Starlette's answer."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    path = request.scope["path"]
    matching = [p for p in paths if _template(p).fullmatch(path)]
    if not matching:
        return None
    methods = {m.upper() for m in paths[min(matching, key=lambda p: p.count("{"))]} & _METHODS
    if "GET" in methods:
        methods.add("HEAD")  # Starlette answers HEAD wherever it answers GET
    return ", ".join(sorted(methods)) or None


_METHODS = {"GET", "PUT", "POST", "DELETE", "PATCH"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    title = _HTTP_TITLES.get(exc.status_code, "HTTP error")
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = allowed
    return problem_response(request, exc.status_code, title, str(exc.detail), headers=headers or None)


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
    """Every problem an operation can answer is in the OpenAPI document, generated here rather than
    listed per route: an authenticated operation gets every status of the error tree, and one that
    reads a body also 400 and 413 (`problem_responses`). A route's own `responses=` only sharpens a
    description. Error responses are problem+json only; FastAPI would also list them as plain JSON."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path in schema.get("paths", {}).values():
                for method, operation in path.items():
                    responses = operation.setdefault("responses", {})
                    if operation.get("security"):  # behind the bearer token: everything under /api/v1
                        reads_body = "requestBody" in operation or method in ("post", "put", "patch")
                        for status, doc in problem_responses(reads_body=reads_body).items():
                            responses.setdefault(str(status), _openapi_doc(doc["description"]))
                    for response in responses.values():
                        content = response.get("content", {})
                        if PROBLEM_JSON in content:
                            content.pop("application/json", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _openapi_doc(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemOut"}}}}


def _doc(description: str) -> dict[str, Any]:
    return {"model": ProblemOut, **_openapi_doc(description)}


Responses = dict[int | str, dict[str, Any]]

# What each status of the error tree means to a client; a status without an entry here is
# described by the titles of its error classes.
_MEANING = {
    401: "no, invalid, expired or revoked bearer token",
    403: "the caller's role or organization does not allow this",
    404: "not found (or not visible to the caller), e.g. a named zone, rule or organization",
    409: "contradicts stored data, or a step this needs has not happened yet (e.g. no audit)",
    422: "invalid input; `errors` lists each value (row, field, message)",
    503: "the database is unreachable or cityward is not initialized",
}
_BODY_PROBLEMS = {
    400: "the body could not be read at all (e.g. it is not UTF-8), or the client went away",
    413: "the request body is over the cap",
}


def _error_classes() -> list[type[CitywardError]]:
    found, stack = [], [CitywardError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def problem_responses(*, reads_body: bool) -> Responses:
    """The problems an authenticated operation may answer: the status of every class in the error
    tree (cityward.errors, and subclasses defined elsewhere) but 500, which names no internals and
    is never part of the contract; with `reads_body`, those of reading a body too."""
    titles: dict[int, set[str]] = {}
    for cls in _error_classes():
        if cls.http_status != 500:
            titles.setdefault(cls.http_status, set()).add(cls.title)
    found: Responses = {status: _doc(_MEANING.get(status) or "; ".join(sorted(names)))
                        for status, names in sorted(titles.items())}
    if reads_body:
        found.update({status: _doc(meaning) for status, meaning in _BODY_PROBLEMS.items()})
    return found


# For OpenAPI: the problems any authenticated endpoint may answer with (the router's default).
COMMON_RESPONSES: Responses = problem_responses(reads_body=False)
NOT_FOUND: Responses = {404: _doc("not found (or not visible to the caller)")}
CONFLICT: Responses = {409: _doc("contradicts stored data")}
ROLLOUT_STATE: Responses = {409: _doc("the rollout's state does not allow this command (e.g. it has finished): "
                                      "`state` and `command` name both")}
TOO_LARGE: Responses = {413: _doc("the request body is over the cap")}
