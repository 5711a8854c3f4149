"""Reading advisory material safely: a file, a directory, a zip of many, gzip, or an HTTP(S) URL.

Everything arrives as (name, bytes) with limits enforced while reading, never after: a zip bomb,
a member whose path escapes (`../`, absolute), a gzip that inflates past the limit or a download
that never ends is refused with a message naming the file and the limit.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx

from cityward.domain.limits import MAX_ADVISORY_BYTES
from cityward.errors import InvalidInput

MAX_DOCUMENT = MAX_ADVISORY_BYTES  # one advisory, catalog or feed, uncompressed (domain/limits.py)
MAX_TOTAL = 2 * 1024 * 1024 * 1024  # everything one import reads, uncompressed
MAX_MEMBERS = 500_000  # files in one archive (the whole CVE list is about 300,000)
MAX_RATIO = 200  # uncompressed / compressed, per archive member
SUFFIXES = (".json", ".csv", ".xml", ".gz")


@dataclass(frozen=True)
class Document:
    name: str  # where it came from, for messages: a path, `archive.zip:member`, a URL
    data: bytes
    error: str | None = None  # why this file could not be read (the others still are)


def _guarded(name: str, documents: Iterator[Document]) -> Iterator[Document]:
    """One file's documents; a file refused (limits, a broken archive) becomes one error item, so
    the import can name every bad file, not only the first."""
    try:
        yield from documents
    except InvalidInput as exc:
        yield Document(name, b"", error=str(exc))


class _Budget:
    def __init__(self) -> None:
        self.used = 0

    def take(self, n: int, name: str) -> None:
        self.used += n
        if self.used > MAX_TOTAL:
            raise InvalidInput(f"{name}: this import reads more than {MAX_TOTAL // 2**20} MB uncompressed; "
                               "import it in parts")


def _gunzip(data: bytes, name: str) -> bytes:
    out = io.BytesIO()
    inflater = zlib.decompressobj(wbits=31)
    try:
        for start in range(0, len(data), 65536):
            out.write(inflater.decompress(data[start:start + 65536], MAX_DOCUMENT + 1 - out.tell()))
            if out.tell() > MAX_DOCUMENT or inflater.unconsumed_tail:
                raise InvalidInput(f"{name}: inflates past {MAX_DOCUMENT // 2**20} MB; refused (gzip bomb?)")
    except zlib.error as exc:
        raise InvalidInput(f"{name}: not a valid gzip file ({exc})") from None
    return out.getvalue()


def _read_file(path: Path, budget: _Budget) -> bytes:
    size = path.stat().st_size
    if size > MAX_DOCUMENT:
        raise InvalidInput(f"{path}: {size // 2**20} MB is over the {MAX_DOCUMENT // 2**20} MB limit per document")
    budget.take(size, str(path))
    return path.read_bytes()


def _members(archive: bytes, name: str, budget: _Budget) -> Iterator[Document]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(archive))
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"{name}: not a valid zip archive ({exc})") from None
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > MAX_MEMBERS:
        raise InvalidInput(f"{name}: {len(infos)} files, over the limit of {MAX_MEMBERS}")
    for info in infos:
        where = f"{name}:{info.filename}"
        member = PurePosixPath(info.filename.replace("\\", "/"))
        if member.is_absolute() or ".." in member.parts or (member.parts and ":" in member.parts[0]):
            raise InvalidInput(f"{where}: the member's path leaves the archive; refused (path traversal)")
        if not info.filename.lower().endswith(SUFFIXES):
            continue
        if info.file_size > MAX_DOCUMENT:
            raise InvalidInput(f"{where}: {info.file_size // 2**20} MB is over the per-document limit")
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 1_000_000:
            raise InvalidInput(f"{where}: compresses {info.file_size // info.compress_size}:1; refused (zip bomb?)")
        budget.take(info.file_size, where)
        with zf.open(info) as fh:
            data = fh.read(MAX_DOCUMENT + 1)  # the header's size can lie: read no more than the limit
        if len(data) > MAX_DOCUMENT:
            raise InvalidInput(f"{where}: inflates past the per-document limit; refused (zip bomb?)")
        yield from _unpack(Document(where, data), budget, nested=True)


def _unpack(doc: Document, budget: _Budget, *, nested: bool = False) -> Iterator[Document]:
    if doc.name.lower().endswith(".gz") or doc.data[:2] == b"\x1f\x8b":
        data = _gunzip(doc.data, doc.name)
        budget.take(len(data), doc.name)
        yield Document(doc.name, data)
    elif doc.data[:4] == b"PK\x03\x04":
        if nested:
            raise InvalidInput(f"{doc.name}: an archive inside an archive is not read")
        yield from _members(doc.data, doc.name, budget)
    else:
        yield doc


def unpack(doc: Document) -> Iterator[Document]:
    """The documents in one already-read file (an upload): itself, or what its gzip or zip holds."""
    yield from _guarded(doc.name, _unpack(doc, _Budget()))


def read_source(source: str, *, timeout: float = 30.0) -> Iterator[Document]:
    """Every document at `source`: a file (JSON, CSV, XML, .gz, .zip), a directory (recursively,
    those suffixes only, in name order), an http(s):// URL, or a CSAF provider's
    `provider-metadata.json` (every document it distributes)."""
    from cityward.adapters.advisories import provider  # it builds on Document, defined here

    budget = _Budget()
    if source.startswith(("http://", "https://")):
        data = fetch(source, timeout=timeout)
        if provider.is_provider_metadata(data):
            for doc in provider.read_provider(source, data, lambda url: fetch(url, timeout=timeout)):
                budget.take(len(doc.data), doc.name)
                yield doc
            return
        yield from _unpack(Document(source, data), budget)
        return
    path = Path(source)
    if not path.exists():
        raise InvalidInput(f"{source}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith((*SUFFIXES, ".zip")))
        if not files:
            raise InvalidInput(f"{source}: no .json, .csv, .xml, .gz or .zip files in this directory")
        for f in files:
            yield from _guarded(str(f), _unpack(Document(str(f), _read_file(f, budget)), budget))
        return
    data = _read_file(path, budget)
    if provider.is_provider_metadata(data):  # a provider's metadata saved locally: its URLs are followed
        yield from provider.read_provider(str(path), data, lambda url: fetch(url, timeout=timeout))
        return
    yield from _guarded(str(path), _unpack(Document(str(path), data), budget))


def fetch(url: str, *, timeout: float = 30.0, limit: int = MAX_DOCUMENT) -> bytes:
    """GET with a size limit enforced while reading."""
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=5) as client, \
                client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise InvalidInput(f"{url}: the server answered {resp.status_code}")
            out = io.BytesIO()
            for chunk in resp.iter_raw():
                out.write(chunk)
                if out.tell() > limit:
                    raise InvalidInput(f"{url}: longer than {limit // 2**20} MB; refused")
            data = out.getvalue()
            if resp.headers.get("content-encoding") == "gzip":
                return _gunzip(data, url)
            return data
    except httpx.HTTPError as exc:
        raise InvalidInput(f"{url}: cannot download ({exc})") from None
