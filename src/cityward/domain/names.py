"""Names have one identity: the rule by which zones, organizations and products compare.

"Harbour", "harbour", "HARBOUR", "Harbour " and the same in full-width letters are one zone. Each table keeps the key
of its names in an indexed, unique column, so a million-row import matches names by joining on
that column instead of calling a function per row (adapters/storage/staging.py), and a
near-duplicate cannot be stored even by two writers racing each other.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from cityward.errors import Conflict

# Separates a key from the id that migration 0009 appended to keep the later rows of a clash
# apart (see `clash_key`). Stored names never contain it: every name is checked for control
# characters before it is stored.
CLASH_MARK = "\x1f"


@lru_cache(maxsize=65536)
def name_key(name: str) -> str:
    """The comparison key of a name: NFKC, case-folded, runs of white space as one space.

    NFKC both before and after case folding: folding can produce characters that
    normalization composes again (e.g. "ǅ"), and the key must be its own key.
    Cached: an import looks up the same few zone and organization names a million times.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return " ".join(folded.split())


def clash_key(key: str, row_id: int) -> str:
    """The key migration 0009 gives a row whose name clashed with an older row's: unique, never
    equal to any name's key, and recognizable by `is_clash_key` so `cityward doctor` reports it."""
    return f"{key}{CLASH_MARK}{row_id}"


def is_clash_key(key: str) -> bool:
    return CLASH_MARK in key


class NameTaken(Conflict):
    """A new name is the same, under `name_key`, as a stored one; the message names the stored one."""

    def __init__(self, what: str, name: str, existing: str) -> None:
        same = "already exists" if name == existing else f"is the same name as the existing {existing!r}"
        super().__init__(f"{what} {name!r} {same}",
                         hint="names compare without regard to case, width or spacing; "
                              f"use {existing!r}, or choose a clearly different name")
        self.existing = existing
