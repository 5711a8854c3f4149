"""Keyset pages over the small lists (zones, organizations, products, tokens).

The services return those lists whole (they are small); the API still pages them so every list
has the same shape and the same `limit`/`after` parameters as `GET /devices`. The cursor is the
sort key of the last item, so a page boundary stays right when items are added meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

from fastapi import Query

from cityward.domain.limits import API_JSON, check_json
from cityward.entrypoints.api.schemas import NO_CONTROL
from cityward.errors import InvalidInput, Problem

T = TypeVar("T")
Key = tuple[str | int, ...]

Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]
After = Annotated[
    str | None,
    Query(max_length=512, pattern=NO_CONTROL,
          description="`next_after` of the previous page; omit for the first page"),
]


def encode_cursor(key: Key) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    bad = InvalidInput("`after` is not a cursor this list returned",
                       [Problem("not a cursor returned as next_after", field="after")])
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        check_json(raw, API_JSON, "after")  # a cursor is one flat list; a forged one must not recurse
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(value, list) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in value
    ):
        raise bad
    return tuple(value)


def paginate(
    items: Sequence[T], key: Callable[[T], Key], limit: int, after: str | None
) -> tuple[list[T], int, str | None]:
    """(page, total, next cursor) of `items` ordered by the unique `key`."""
    ordered = sorted(items, key=key)
    if after:
        start = decode_cursor(after)
        try:
            ordered = [item for item in ordered if key(item) > start]
        except TypeError:  # a cursor from another list
            raise InvalidInput("`after` is not a cursor this list returned",
                               [Problem("not a cursor returned as next_after", field="after")]
                               ) from None
    page = ordered[:limit]
    return page, len(items), encode_cursor(key(page[-1])) if len(ordered) > limit else None
