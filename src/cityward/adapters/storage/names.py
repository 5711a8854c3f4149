"""Finding a zone or an organization by name: by its key (domain.names), in one indexed lookup."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from cityward.adapters.storage.models import OrganizationRow, ZoneRow
from cityward.domain.names import NameTaken, name_key
from cityward.errors import NotFound

Named = TypeVar("Named", OrganizationRow, ZoneRow)


def find_named(session: Session, row_type: type[Named], name: str, *, exact_first: bool = False) -> Named | None:
    """The row whose name is `name` under `name_key` (any case, width or spacing).

    `exact_first`: a row stored with exactly this name wins, even one that lost its key to an older
    row in a clash migration 0009 reported; only renaming uses it, so such a row can be renamed
    away while every other lookup reaches the row holding the key."""
    key = name_key(name)
    cond = row_type.name_key == key
    if not exact_first:
        return session.scalars(select(row_type).where(cond)).first()
    return session.scalars(
        select(row_type).where(cond | (row_type.name == name))
        .order_by(case((row_type.name == name, 0), else_=1)).limit(1)
    ).first()


def key_holder(session: Session, row_type: type[Named], key: str, but: int | None = None) -> Named | None:
    """The row holding `key`, other than row `but`."""
    q = select(row_type).where(row_type.name_key == key)
    if but is not None:
        q = q.where(row_type.id != but)
    return session.scalars(q).first()


def rename_named(session: Session, row_type: type[Named], name: str, new_name: str,
                 what: str) -> tuple[Named, str]:
    """Give the row called `name` (exact name first, see find_named) the name `new_name` and its
    key; returns the row and the name it had. NotFound when there is no such row, NameTaken when another row
    holds the new name's key."""
    row = find_named(session, row_type, name, exact_first=True)
    if row is None:
        raise NotFound(f"{what} {name!r} not found")
    if (same := key_holder(session, row_type, name_key(new_name), but=row.id)) is not None:
        raise NameTaken(what, new_name, same.name)
    before = row.name
    row.name, row.name_key = new_name, name_key(new_name)
    session.flush()
    return row, before
