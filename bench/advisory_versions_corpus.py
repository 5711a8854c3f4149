"""Run every affected-version string in an advisory corpus through the reader; list unreadable ones.

Measurement only (the corpus is not part of the project): `python bench/advisory_versions_corpus.py
/work/shared/corpus/advisories` prints read/unreadable counts and each unreadable string with its reason.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from cityward.domain.advisory_versions import RangeError, parse_csaf_range, parse_cve5, parse_text


def _csaf_names(node: object) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        if node.get("category") in ("product_version", "product_version_range") and isinstance(node.get("name"), str):
            yield node["category"], node["name"]
        for value in node.values():
            yield from _csaf_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _csaf_names(value)


def _cve5_entries(doc: dict[str, object]) -> Iterator[dict[str, object]]:
    containers = doc.get("containers", {})
    if not isinstance(containers, dict):
        return
    blocks = [containers.get("cna", {}), *(containers.get("adp") or [])]
    for block in blocks:
        for affected in (block or {}).get("affected", []) if isinstance(block, dict) else []:
            if isinstance(affected, dict):
                yield affected


def main(root: Path) -> int:
    read = unreadable = 0
    for path in sorted(root.rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        checks: list[tuple[str, object]] = []
        if "document" in doc:
            for category, name in _csaf_names(doc.get("product_tree", {})):
                checks.append((name, (parse_csaf_range if category == "product_version_range" else parse_text, name)))
        else:
            for affected in _cve5_entries(doc):
                for item in affected.get("versions") or []:
                    checks.append((json.dumps(item)[:160], (parse_cve5, item)))
        for label, (fn, arg) in checks:  # type: ignore[misc]
            try:
                fn(arg)
                read += 1
            except (RangeError, ValueError) as exc:
                unreadable += 1
                print(f"{path.name}\t{label!r}\t{getattr(exc, 'reason', exc)}")
    print(f"read {read}, unreadable {unreadable}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/corpus/advisories")))
