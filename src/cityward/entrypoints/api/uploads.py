"""Request bodies: a cap on every body, and uploads spooled to a temporary file.

The cap is enforced in an ASGI middleware on the bytes as they arrive, so an oversized body is
refused (413) without ever being held whole, whether or not the client declared its length. A
JSON body (of any endpoint but the uploads, whose readers have their own limits) has its nesting
checked the same way, as it arrives: deeper than `API_JSON_DEPTH` is a 422 naming the limit, before
FastAPI parses it (domain/limits.py).
"""

from __future__ import annotations

import tempfile
from typing import IO, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cityward.domain.limits import API_JSON, MAX_API_JSON_BYTES, JsonScanner, LimitExceeded
from cityward.entrypoints.api.problems import problem_response

JSON_BODY_LIMIT = MAX_API_JSON_BYTES  # every JSON endpoint takes a small object
SPOOL_IN_MEMORY = 8 << 20  # uploads larger than this go to disk while they arrive


_TITLE = "Payload too large"


def _too_large(limit: int) -> str:
    return f"the request body is larger than the limit of {limit} bytes"


class BodyLimit:
    """Refuse request bodies over a per-path limit (`limits`), else `default`."""

    def __init__(self, app: ASGIApp, *, default: int, limits: dict[str, int]) -> None:
        self.app, self.default, self.limits = app, default, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = problem_response(Request(scope), 413, _TITLE, _too_large(limit))
            await response(scope, receive, send)
            return
        received = 0
        scanner = (JsonScanner(API_JSON, "the request body")
                   if scope["path"] not in self.limits and _is_json(headers.get(b"content-type", b"")) else None)

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    # Starlette's HTTPException passes through FastAPI's body parsing untouched
                    # and is rendered by the problem handlers like every other error.
                    raise HTTPException(413, _too_large(limit))
                if scanner is not None:
                    try:
                        scanner.feed(chunk)
                    except LimitExceeded as exc:
                        raise HTTPException(422, exc.message) from None
            return message

        await self.app(scope, limited, send)


def _is_json(content_type: bytes) -> bool:
    """What FastAPI would parse as JSON: a JSON media type, or none at all."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return not media or media == b"application/json" or media.endswith(b"+json")


async def spool_body(request: Request) -> IO[bytes]:
    """The request body in a temporary file, rewound; the caller closes it."""
    spool: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
    try:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool  # type: ignore[no-any-return]
