"""One sortable key for the version strings devices report, whatever the vendor's scheme.

Semver (`2.4.1`), dotted integers (`5.12.0.3`) and vendor strings (`V5.5.0 build 170725`) all
order by their numeric groups, left to right; the key is those groups zero-padded and joined, so
plain text comparison of keys is version comparison, in SQL and in polars alike.
"""

from __future__ import annotations

import re

_GROUP = re.compile(r"[0-9]+")  # ASCII digits: the vectorized key (polars) reads only those
_WIDTH = 10
_CAP = 10**_WIDTH - 1


def version_key(version: str | None) -> str | None:
    if version is None:
        return None
    groups = _GROUP.findall(version)
    if not groups:
        return "~" + version.lower()  # no numbers at all: after every numbered version, by text
    return ".".join(f"{min(int(g), _CAP):0{_WIDTH}d}" for g in groups)
