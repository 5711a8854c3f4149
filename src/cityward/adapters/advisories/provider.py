"""A CSAF provider's `provider-metadata.json` (CSAF 2.0 §7.1.7): every advisory it distributes,
from its directory distributions (`index.txt`) and ROLIE feeds, each checked against its
`.sha512` / `.sha256` file when the provider publishes one.

A provider speaks for its own domain only: a document, index or feed URL on another host than the
metadata's `canonical_url` is refused, as is a hash that does not match. Refusals are returned as
error documents naming the URL, so the import reports every one and stores nothing by default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

from cityward.adapters.advisories.sources import Document
from cityward.domain.limits import ADVISORY_JSON, load_json
from cityward.errors import InvalidInput

MAX_DOCUMENTS = 100_000
Fetch = Callable[[str], bytes]


def is_provider_metadata(data: bytes) -> bool:
    head = data[:4096]
    return b'"canonical_url"' in head or (b'"distributions"' in data[:65536] and b'"metadata_version"' in data[:65536])


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{parts.port or ''}"


def _listed(meta: dict[str, Any], fetch: Fetch, name: str) -> Iterator[str | Document]:
    """Document URLs from every distribution (or an error Document for a distribution that fails)."""
    for i, dist in enumerate(meta.get("distributions", []) or []):
        if not isinstance(dist, dict):
            yield Document(f"{name}: distributions[{i}]", b"", error=f"{name}: distributions[{i}] is not an object")
            continue
        directory = dist.get("directory_url")
        if isinstance(directory, str):
            base = directory if directory.endswith("/") else directory + "/"
            try:
                index = fetch(urljoin(base, "index.txt")).decode("utf-8")
            except (InvalidInput, UnicodeDecodeError) as exc:
                yield Document(base, b"", error=f"{base}index.txt: {exc}")
            else:
                yield from (urljoin(base, line.strip()) for line in index.splitlines()
                            if line.strip() and not line.startswith("#"))
        rolie = dist.get("rolie")
        for feed in (rolie or {}).get("feeds", []) if isinstance(rolie, dict) else []:
            url = feed.get("url") if isinstance(feed, dict) else None
            if not isinstance(url, str):
                continue
            try:
                entries = load_json(fetch(url), ADVISORY_JSON, url).get("feed", {}).get("entry", [])
            except (InvalidInput, ValueError, AttributeError) as exc:
                yield Document(url, b"", error=f"{url}: not a ROLIE feed ({exc})")
                continue
            for entry in entries:
                src = (entry.get("content") or {}).get("src") if isinstance(entry, dict) else None
                if not isinstance(src, str):
                    src = next((link.get("href") for link in entry.get("link", []) or []
                                if isinstance(link, dict) and link.get("rel") == "self"), None)
                if isinstance(src, str):
                    yield urljoin(url, src)


def _checked(url: str, data: bytes, fetch: Fetch) -> Document:
    """The document, or an error naming it when its published hash does not match."""
    for suffix, algorithm in ((".sha512", "sha512"), (".sha256", "sha256")):
        try:
            published = fetch(url + suffix).decode("ascii", "replace").split()
        except InvalidInput:
            continue  # not published: nothing to check against
        expected = published[0].lower() if published else ""
        actual = hashlib.new(algorithm, data).hexdigest()
        if expected != actual:
            return Document(url, b"", error=f"{url}: its {suffix} says {expected[:16]}…, the document hashes to "
                                             f"{actual[:16]}…; refused (altered or truncated)")
        break
    return Document(url, data)


def read_provider(url: str, data: bytes, fetch: Fetch) -> Iterator[Document]:
    """Every document `provider-metadata.json` at `url` (already read as `data`) distributes."""
    try:
        meta = load_json(data, ADVISORY_JSON, url)
    except InvalidInput as exc:
        raise InvalidInput(f"{url}: malformed provider metadata ({exc.message})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("distributions"), list):
        raise InvalidInput(f"{url}: provider metadata without distributions")
    given = meta.get("canonical_url")
    canonical: str = given if isinstance(given, str) else url
    home = _host(canonical)
    if url.startswith(("http://", "https://")) and _host(url) != home:
        raise InvalidInput(f"{url}: its canonical_url {canonical} is on another host; refused")
    seen: set[str] = set()
    for item in _listed(meta, fetch, url):
        if isinstance(item, Document):
            yield item
            continue
        if item in seen:
            continue
        seen.add(item)
        if len(seen) > MAX_DOCUMENTS:
            yield Document(url, b"", error=f"{url}: more than {MAX_DOCUMENTS} documents")
            return
        if _host(item) != home:
            yield Document(item, b"", error=f"{item}: outside the provider's domain ({home}); refused")
            continue
        if not item.lower().endswith(".json"):
            continue
        try:
            body = fetch(item)
        except InvalidInput as exc:
            yield Document(item, b"", error=str(exc))
            continue
        yield _checked(item, body, fetch)
