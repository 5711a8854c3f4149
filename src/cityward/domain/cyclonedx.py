"""CycloneDX SBOMs (1.4, 1.5, 1.6; JSON and XML) → the subject they describe, its components and the
VEX statements they embed. No I/O: bytes in, a frozen `Sbom` out, or `SbomError` naming the document
and where the problem is (JSON pointer, XML path, or line and column for text that does not parse).

Only what cityward uses is read and checked, without a schema library: `bomFormat`, the spec version
(JSON `specVersion`, XML namespace), component type and name, PURLs (they must parse), hashes (hex of
the algorithm's length), and the VEX enumerations. Everything else (licences, dependencies, services,
tools, properties, extensions) is ignored.

Hostile input is bounded: at most `MAX_BYTES` of input, `MAX_COMPONENTS` components (nested ones
included, counted before deduplication), `MAX_VEX` VEX statements, components nested `MAX_DEPTH`
deep; JSON nesting depth and values (domain/limits.py) are checked before the parser runs, and XML
is parsed incrementally with its depth and element count checked as elements start, so a refused
document never becomes a tree. XML with a document type declaration or an entity declaration is
refused before it reaches the parser (billion laughs, XXE).

PURLs are read by a strict regular expression for the common shapes (no percent-encoding, no
subpath, no type with its own name rules) and by packageurl-python otherwise; both give the same
key (tests/test_cyclonedx.py checks it), the first about 8 times faster, which matters at 100,000
components.

Duplicate components (same PURL, or same group, name, version and type when there is no PURL) are
kept once and counted in `Sbom.duplicates`; the bom-refs of the dropped copies resolve to the kept one.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET  # DTDs refused before parsing: _xml_root
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import unquote

from packageurl import PackageURL

from cityward.domain import limits
from cityward.errors import InvalidInput, Problem

__all__ = [
    "CLEARED_STATES",
    "MAX_BYTES",
    "MAX_COMPONENTS",
    "MAX_DEPTH",
    "MAX_VEX",
    "SUPPORTED_VERSIONS",
    "Component",
    "Hash",
    "Sbom",
    "SbomError",
    "VexState",
    "VexStatement",
    "component_key",
    "parse_sbom",
    "purl_key",
    "vex_not_affected",
]

MAX_BYTES = limits.MAX_SBOM_BYTES
MAX_COMPONENTS = 100_000
MAX_VEX = 100_000  # (vulnerability, affected ref) pairs
MAX_DEPTH = 64  # components inside components
SUPPORTED_VERSIONS = ("1.4", "1.5", "1.6")

_TYPES_14 = frozenset({
    "application", "framework", "library", "container", "operating-system", "device", "firmware", "file"})
_TYPES_15 = _TYPES_14 | {"platform", "device-driver", "machine-learning-model", "data"}
_COMPONENT_TYPES = {"1.4": _TYPES_14, "1.5": _TYPES_15, "1.6": _TYPES_15 | {"cryptographic-asset"}}
# hex digits per algorithm; BLAKE3 has a variable output, the schema allows these lengths
_HASH_LENGTHS: dict[str, frozenset[int]] = {
    "MD5": frozenset({32}), "SHA-1": frozenset({40}),
    "SHA-256": frozenset({64}), "SHA-384": frozenset({96}), "SHA-512": frozenset({128}),
    "SHA3-256": frozenset({64}), "SHA3-384": frozenset({96}), "SHA3-512": frozenset({128}),
    "BLAKE2b-256": frozenset({64}), "BLAKE2b-384": frozenset({96}), "BLAKE2b-512": frozenset({128}),
    "BLAKE3": frozenset({32, 40, 64, 96, 128}),
}
_JUSTIFICATIONS = frozenset({
    "code_not_present", "code_not_reachable", "requires_configuration", "requires_dependency",
    "requires_environment", "protected_by_compiler", "protected_at_runtime", "protected_at_perimeter",
    "protected_by_mitigating_control"})
_RESPONSES = frozenset({"can_not_fix", "will_not_fix", "update", "rollback", "workaround_available"})
_HEX = re.compile(r"[0-9a-fA-F]+")
_NAMESPACE = re.compile(r"http://cyclonedx\.org/schema/bom/(\d+(?:\.\d+)*)")
_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
# purl: the fast path's alphabet (no %, @, :, /, ? or # inside a part)
_P = r"[A-Za-z0-9._~+-]"
_Q = r"[A-Za-z][A-Za-z0-9._-]*=[A-Za-z0-9._~+:/-]+"
_FAST_PURL = re.compile(
    rf"pkg:([A-Za-z][A-Za-z0-9._-]*)/((?:{_P}+/)*)({_P}+)(?:@([A-Za-z0-9._~+:-]+))?(?:\?({_Q}(?:&{_Q})*))?")
# types whose name or version packageurl rewrites beyond case (pypi: _ → -, …), or npm's @scope
_SLOW_TYPES = frozenset({"pypi", "hackage", "pub", "huggingface", "oci", "mlflow", "npm"})


class SbomError(InvalidInput, ValueError):
    """An SBOM cityward cannot use: `document` is its name, `location` a JSON pointer, an XML path or
    "line L, column C", `reason` what is wrong there."""

    def __init__(self, document: str, location: str, reason: str) -> None:
        super().__init__(f"{document}: {location}: {reason}", [Problem(reason, field=location, source=document)])
        self.document = document
        self.location = location
        self.reason = reason


class VexState(StrEnum):
    RESOLVED = "resolved"
    RESOLVED_WITH_PEDIGREE = "resolved_with_pedigree"
    EXPLOITABLE = "exploitable"
    IN_TRIAGE = "in_triage"
    FALSE_POSITIVE = "false_positive"
    NOT_AFFECTED = "not_affected"


_STATES = tuple(s.value for s in VexState)
# States that clear a component of a vulnerability (see `vex_not_affected`).
CLEARED_STATES = frozenset({
    VexState.NOT_AFFECTED, VexState.FALSE_POSITIVE, VexState.RESOLVED, VexState.RESOLVED_WITH_PEDIGREE})


@dataclass(frozen=True)
class Hash:
    algorithm: str  # as CycloneDX spells it: "SHA-256"
    value: str  # lower-case hex


@dataclass(frozen=True)
class Component:
    type: str  # "firmware", "device", "operating-system", "library", …
    name: str
    version: str | None = None
    group: str | None = None
    vendor: str | None = None  # manufacturer, else supplier, else publisher
    purl: str | None = None  # as written (it parses)
    cpe: str | None = None
    hashes: tuple[Hash, ...] = ()
    bom_ref: str | None = None

    @property
    def sha256(self) -> tuple[str, ...]:
        return tuple(h.value for h in self.hashes if h.algorithm == "SHA-256")


@dataclass(frozen=True)
class VexStatement:
    """One `vulnerabilities[]` item for one of its `affects[]` refs."""

    id: str  # CVE-…, GHSA-…, as written
    ref: str  # as written: a bom-ref or a BOM-Link
    component: Component | None  # what `ref` names in this SBOM (subject included); None if nothing
    state: VexState | None  # None: no analysis given
    justification: str | None = None
    responses: tuple[str, ...] = ()
    detail: str | None = None


@dataclass(frozen=True)
class Sbom:
    name: str
    spec_version: str  # "1.4" | "1.5" | "1.6"
    serial_number: str | None
    subject: Component | None  # metadata.component: the firmware image or device described
    components: tuple[Component, ...]  # flattened (nested components included), deduplicated
    vex: tuple[VexStatement, ...]
    duplicates: int = 0  # components dropped as duplicates


# --- public functions ---------------------------------------------------------------------------


def parse_sbom(data: bytes, name: str) -> Sbom:
    """A CycloneDX 1.4, 1.5 or 1.6 SBOM, JSON or XML (detected from the first character), or SbomError."""
    if len(data) > MAX_BYTES:
        raise SbomError(name, "/", f"{len(data):,} bytes; at most {MAX_BYTES:,}")
    text = _decode(data, name)
    start = text.lstrip()[:1]
    if start in ("{", "["):
        utf8 = text.encode() if data.startswith((b"\xff\xfe", b"\xfe\xff")) else data
        raw = _read_json(_json_root(text, name, utf8), name)
    elif start == "<":
        raw = _read_xml(_xml_root(text, name), name)
    else:
        raise SbomError(name, "line 1, column 1", "neither JSON nor XML: not a CycloneDX SBOM")
    return _build(raw, name)


def purl_key(purl: str) -> tuple[str, str | None] | None:
    """`pkg:generic/Cityward/Camera-Firmware@1.5.0` → ("generic/cityward/camera-firmware", "1.5.0");
    None for text that is not a PURL. The same key for an SBOM's and an advisory's PURL."""
    parsed = _purl(purl)
    return None if isinstance(parsed, str) else (parsed.key, parsed.version)


def component_key(component: Component) -> tuple[str, str | None] | None:
    """(type/namespace/name lower-cased, version) from the component's PURL (the version from the
    PURL, else the component's); None without a PURL."""
    if component.purl is None:
        return None
    key = purl_key(component.purl)
    if key is None:
        return None
    return key[0], key[1] if key[1] is not None else component.version


def vex_not_affected(sbom: Sbom) -> set[tuple[str, str]]:
    """(vulnerability id, component key string) pairs this SBOM clears: not_affected, false_positive,
    resolved or resolved_with_pedigree. Conservative: a pair is returned only if every component of
    the SBOM with that key is cleared and no statement about one of them says otherwise (exploitable,
    in_triage, or no analysis), so two versions of one library never clear each other."""
    cleared: dict[tuple[str, str], set[Component]] = {}
    blocked: set[tuple[str, str]] = set()
    for s in sbom.vex:
        k = component_key(s.component) if s.component is not None else None
        if s.component is None or k is None:
            continue
        pair = (s.id, k[0])
        if s.state in CLEARED_STATES:
            cleared.setdefault(pair, set()).add(s.component)
        else:
            blocked.add(pair)
    wanted = {key for (_, key), _ in cleared.items()}
    keyed: dict[str, set[Component]] = {}  # only the keys some statement clears: hashing 100,000 is slow
    for c in (*sbom.components, *((sbom.subject,) if sbom.subject else ())):
        k = component_key(c)
        if k is not None and k[0] in wanted:
            keyed.setdefault(k[0], set()).add(c)
    return {pair for pair, comps in cleared.items() if pair not in blocked and comps >= keyed.get(pair[1], set())}


# --- format-neutral reading ---------------------------------------------------------------------


@dataclass
class _RawComponent:
    where: str
    type: str | None
    name: str | None
    version: str | None = None
    group: str | None = None
    vendor: str | None = None
    purl: str | None = None
    cpe: str | None = None
    hashes: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # (where, alg, content)
    bom_ref: str | None = None
    type_where: str = ""


@dataclass
class _RawVuln:
    where: str
    id: str | None
    state: str | None = None
    justification: str | None = None
    responses: list[str] = field(default_factory=list)
    detail: str | None = None
    refs: list[tuple[str, str | None]] = field(default_factory=list)  # (where, ref)
    analysis_where: str = ""


@dataclass
class _Raw:
    spec: str
    serial: str | None
    subject: _RawComponent | None
    components: list[_RawComponent]
    vulns: list[_RawVuln]


def _clip(text: str) -> str:
    return text if len(text) <= 100 else text[:100] + "…"


def _short(value: object) -> str:
    return _clip(repr(value))


def _decode(data: bytes, name: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif data.startswith(b"<\x00?\x00"):
        encoding = "utf-16-le"
    elif data.startswith(b"\x00<\x00?"):
        encoding = "utf-16-be"
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SbomError(name, f"byte {exc.start}", f"not {encoding.removesuffix('-sig').upper()} text") from None


def _pair_hash(where: str, alg: str | None, content: str | None, name: str) -> Hash:
    if alg is None:
        raise SbomError(name, where, "hash without an algorithm")
    lengths = _HASH_LENGTHS.get(alg)
    if lengths is None:
        raise SbomError(name, where, f"unknown hash algorithm {_short(alg)} (known: {', '.join(_HASH_LENGTHS)})")
    if content is None or not _HEX.fullmatch(content) or len(content) not in lengths:
        want = " or ".join(str(n) for n in sorted(lengths))
        raise SbomError(name, where, f"{alg} hash {_short(content)} is not {want} hex digits")
    return Hash(alg, content.lower())


class _Purl(NamedTuple):
    key: str  # type/namespace/name, lower-cased
    version: str | None
    qualifiers: tuple[tuple[str, str], ...]  # sorted, keys lower-cased
    subpath: str | None


def _fast_purl(purl: str) -> _Purl | None:
    m = _FAST_PURL.fullmatch(purl)
    if m is None or m[1].lower() in _SLOW_TYPES:
        return None
    # Keys are case-insensitive: lower-cased before the dict, so a repeated key keeps its last value
    # whatever its case, as packageurl does.
    qualifiers = {k.lower(): v for k, v in (kv.partition("=")[::2] for kv in m[5].split("&"))} if m[5] else {}
    return _Purl(f"{m[1]}/{m[2]}{m[3]}".lower(), m[4],
                 tuple(sorted(qualifiers.items())), None)


def _slow_purl(purl: str) -> _Purl | str:
    try:
        p = PackageURL.from_string(purl)
        key = "/".join(part.lower() for part in (p.type, p.namespace, p.name) if part)
        return _Purl(key, p.version or None, tuple(sorted(p.qualifiers.items())), p.subpath or None)
    except Exception as exc:  # packageurl raises ValueError, but any failure means "not a PURL"
        return str(exc) or type(exc).__name__


@lru_cache(maxsize=8192)
def _purl(purl: str) -> _Purl | str:
    """The parts cityward uses, or why it is not a PURL."""
    return _fast_purl(purl) or _slow_purl(purl)


def _component(raw: _RawComponent, spec: str, name: str) -> Component:
    if raw.type is None:
        raise SbomError(name, raw.type_where, "component without a type")
    if raw.type not in _COMPONENT_TYPES[spec]:
        known = ", ".join(sorted(_COMPONENT_TYPES[spec]))
        raise SbomError(name, raw.type_where, f"{_short(raw.type)} is not a CycloneDX {spec} component type ({known})")
    if not raw.name:
        raise SbomError(name, raw.where, "component without a name")
    if raw.purl is not None:
        parsed = _purl(raw.purl)
        if isinstance(parsed, str):
            raise SbomError(name, f"{raw.where}/purl", f"{_short(raw.purl)} is not a package URL: {parsed}")
    hashes = tuple(_pair_hash(where, alg, content, name) for where, alg, content in raw.hashes)
    return Component(type=raw.type, name=raw.name, version=raw.version, group=raw.group, vendor=raw.vendor,
                     purl=raw.purl, cpe=raw.cpe, hashes=hashes, bom_ref=raw.bom_ref)


def _dedupe_key(c: Component) -> tuple[object, ...]:
    if c.purl is not None:
        parsed = _purl(c.purl)
        if not isinstance(parsed, str):
            return ("purl", *parsed)
    return ("fields", c.group, c.name, c.version, c.type)


def _resolve(ref: str, serial: str | None, by_ref: Mapping[str, Component]) -> Component | None:
    found = by_ref.get(ref)
    if found is None and ref.startswith("urn:cdx:") and "#" in ref and serial:
        # BOM-Link to this BOM: urn:cdx:<serial uuid>/<version>#<percent-encoded bom-ref>
        target, _, fragment = ref[len("urn:cdx:"):].partition("#")
        if target.split("/", 1)[0] == serial.removeprefix("urn:uuid:"):
            found = by_ref.get(unquote(fragment))
    return found


def _build(raw: _Raw, name: str) -> Sbom:
    subject = _component(raw.subject, raw.spec, name) if raw.subject is not None else None
    kept: dict[tuple[object, ...], Component] = {}
    by_ref: dict[str, Component] = {}
    if subject is not None and subject.bom_ref is not None:
        by_ref[subject.bom_ref] = subject
    duplicates = 0
    for rc in raw.components:
        c = _component(rc, raw.spec, name)
        key = _dedupe_key(c)
        held = kept.get(key)
        if held is None:
            kept[key] = held = c
        else:
            duplicates += 1
        if c.bom_ref is not None:
            by_ref.setdefault(c.bom_ref, held)
    statements: dict[VexStatement, None] = {}
    for v in raw.vulns:
        if not v.id:
            raise SbomError(name, v.where, "vulnerability without an id")
        state = None
        if v.state is not None:
            if v.state not in _STATES:
                raise SbomError(name, f"{v.analysis_where}/state",
                                f"{_short(v.state)} is not a VEX state ({', '.join(_STATES)})")
            state = VexState(v.state)
        if v.justification is not None and v.justification not in _JUSTIFICATIONS:
            raise SbomError(name, f"{v.analysis_where}/justification",
                            f"{_short(v.justification)} is not a VEX justification")
        for response in v.responses:
            if response not in _RESPONSES:
                raise SbomError(name, v.analysis_where, f"{_short(response)} is not a VEX response")
        for where, ref in v.refs:
            if not ref:
                raise SbomError(name, where, "affects an empty ref")
            statements.setdefault(VexStatement(
                id=v.id, ref=ref, component=_resolve(ref, raw.serial, by_ref), state=state,
                justification=v.justification, responses=tuple(v.responses), detail=v.detail), None)
    return Sbom(name=name, spec_version=raw.spec, serial_number=raw.serial, subject=subject,
                components=tuple(kept.values()), vex=tuple(statements), duplicates=duplicates)


def _check_spec(version: object, where: str, name: str) -> str:
    if not isinstance(version, str):
        raise SbomError(name, where, f"the spec version must be a string, not {_short(version)}")
    if version not in SUPPORTED_VERSIONS:
        raise SbomError(name, where, f"unsupported CycloneDX version {_clip(version)} "
                                     f"(supported: {', '.join(SUPPORTED_VERSIONS)})")
    return version


class _Counter:
    def __init__(self, name: str, limit: int, what: str) -> None:
        self.name, self.limit, self.what, self.n = name, limit, what, 0

    def add(self, where: str, n: int = 1) -> None:
        self.n += n
        if self.n > self.limit:
            raise SbomError(self.name, where, f"more than {self.limit:,} {self.what}")


# --- JSON ---------------------------------------------------------------------------------------


def _json_root(text: str, name: str, utf8: bytes) -> Any:
    try:
        limits.check_json(utf8, limits.DOCUMENT_JSON, name)
    except limits.LimitExceeded as exc:
        raise SbomError(name, exc.where, f"over the limit of {exc.limit}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SbomError(name, f"line {exc.lineno}, column {exc.colno}", f"not well-formed JSON: {exc.msg}") from None
    except RecursionError:
        raise SbomError(name, "/", "JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise SbomError(name, "/", f"not usable JSON: {exc}") from None


def _jobj(value: object, where: str, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SbomError(name, where, f"must be an object, not {type(value).__name__}")
    return value


def _jlist(value: object, where: str, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SbomError(name, where, f"must be an array, not {type(value).__name__}")
    return value


def _jstr(obj: Mapping[str, Any], key: str, where: str, name: str) -> str | None:
    """A string member; absent, null or empty → None."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SbomError(name, f"{where}/{key}", f"must be a string, not {type(value).__name__}")
    return value or None


def _jname(obj: Mapping[str, Any], key: str, where: str, name: str) -> str | None:
    """`obj[key].name`: an organization's name."""
    return _jstr(_jobj(obj.get(key), f"{where}/{key}", name), "name", f"{where}/{key}", name)


def _json_component(obj: object, where: str, name: str, metadata: Mapping[str, Any] | None = None) -> _RawComponent:
    c = _jobj(obj, where, name)
    vendor = _jname(c, "manufacturer", where, name)
    if metadata is not None:  # the subject: metadata.manufacture (deprecated in 1.6) and metadata.supplier
        vendor = vendor or _jname(metadata, "manufacture", "/metadata", name)
    vendor = vendor or _jname(c, "supplier", where, name)
    if metadata is not None:
        vendor = vendor or _jname(metadata, "supplier", "/metadata", name)
    vendor = vendor or _jstr(c, "publisher", where, name)
    hashes = []
    for i, h in enumerate(_jlist(c.get("hashes"), f"{where}/hashes", name)):
        here = f"{where}/hashes/{i}"
        h = _jobj(h, here, name)
        hashes.append((here, _jstr(h, "alg", here, name), _jstr(h, "content", here, name)))
    return _RawComponent(
        where=where, type=_jstr(c, "type", where, name), name=_jstr(c, "name", where, name),
        version=_jstr(c, "version", where, name), group=_jstr(c, "group", where, name), vendor=vendor,
        purl=_jstr(c, "purl", where, name), cpe=_jstr(c, "cpe", where, name), hashes=hashes,
        bom_ref=_jstr(c, "bom-ref", where, name), type_where=f"{where}/type")


def _json_components(items: object, where: str, name: str, count: _Counter, depth: int) -> Iterator[_RawComponent]:
    listed = _jlist(items, where, name)
    if not listed:
        return
    if depth > MAX_DEPTH:
        raise SbomError(name, where, f"components nested deeper than {MAX_DEPTH}")
    count.add(where, len(listed))
    for i, obj in enumerate(listed):
        here = f"{where}/{i}"
        yield _json_component(obj, here, name)
        yield from _json_components(obj.get("components"), f"{here}/components", name, count, depth + 1)


def _read_json(doc: object, name: str) -> _Raw:
    if not isinstance(doc, dict):
        raise SbomError(name, "/", "not a CycloneDX BOM: the document is not a JSON object")
    if "bomFormat" not in doc:
        raise SbomError(name, "/bomFormat", 'missing: a CycloneDX JSON BOM says "bomFormat": "CycloneDX"')
    if doc["bomFormat"] != "CycloneDX":
        raise SbomError(name, "/bomFormat", f'{_short(doc["bomFormat"])} is not "CycloneDX"')
    if "specVersion" not in doc:
        raise SbomError(name, "/specVersion", "missing")
    spec = _check_spec(doc["specVersion"], "/specVersion", name)
    serial = _jstr(doc, "serialNumber", "", name)
    metadata = _jobj(doc.get("metadata"), "/metadata", name)
    count = _Counter(name, MAX_COMPONENTS, "components")
    subject = None
    components: list[_RawComponent] = []
    if metadata.get("component") is not None:
        subject = _json_component(metadata["component"], "/metadata/component", name, metadata)
        components.extend(_json_components(
            metadata["component"].get("components"), "/metadata/component/components", name, count, 1))
    components.extend(_json_components(doc.get("components"), "/components", name, count, 1))
    vex_count = _Counter(name, MAX_VEX, "VEX statements (vulnerability and affected ref pairs)")
    vulns = []
    for i, obj in enumerate(_jlist(doc.get("vulnerabilities"), "/vulnerabilities", name)):
        where = f"/vulnerabilities/{i}"
        v = _jobj(obj, where, name)
        a_where = f"{where}/analysis"
        analysis = _jobj(v.get("analysis"), a_where, name)
        responses = _jlist(analysis.get("response"), f"{a_where}/response", name)
        for j, r in enumerate(responses):
            if not isinstance(r, str):
                raise SbomError(name, f"{a_where}/response/{j}", f"must be a string, not {type(r).__name__}")
        refs = []
        for j, target in enumerate(_jlist(v.get("affects"), f"{where}/affects", name)):
            here = f"{where}/affects/{j}"
            refs.append((here, _jstr(_jobj(target, here, name), "ref", here, name)))
        vex_count.add(f"{where}/affects", max(len(refs), 1))
        vulns.append(_RawVuln(
            where=where, id=_jstr(v, "id", where, name), state=_jstr(analysis, "state", a_where, name),
            justification=_jstr(analysis, "justification", a_where, name), responses=responses,
            detail=_jstr(analysis, "detail", a_where, name), refs=refs, analysis_where=a_where))
    return _Raw(spec, serial, subject, components, vulns)


# --- XML ----------------------------------------------------------------------------------------


def _xml_root(text: str, name: str) -> ET.Element:
    """Parse, DOCTYPE and ENTITY declarations refused beforehand. The text is fed as `str`, so expat
    reads it as decoded here whatever the XML declaration says (no encoding trick hides a DTD)."""
    found = _DTD.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
        raise SbomError(name, f"line {line}, column {column}",
                        f"XML with a <!{found.group(1).upper()} declaration is refused (entity expansion, XXE)")
    # Pulled in slices, so depth and element count are checked while the tree grows, not after.
    parser: ET.XMLPullParser[Any] = ET.XMLPullParser(events=("start", "end"))  # no DTD reaches it
    root: ET.Element | None = None
    depth = elements = 0
    try:
        for at in range(0, len(text) + 1, _XML_SLICE):
            if at < len(text):
                parser.feed(text[at:at + _XML_SLICE])
            else:
                parser.close()
            for event, elem in parser.read_events():  # type: ignore[misc]  # (event, Element) for start/end
                if event == "end":
                    depth -= 1
                    continue
                depth += 1
                elements += 1
                root = elem if root is None else root  # type: ignore[assignment]  # a start event gives an Element
                if depth > limits.XML_DEPTH:
                    raise SbomError(name, _near(text, at), f"over the limit of nesting depth {limits.XML_DEPTH}")
                if elements > limits.XML_ELEMENTS:
                    raise SbomError(name, _near(text, at), f"over the limit of {limits.XML_ELEMENTS:,} elements")
        if root is None:
            raise SbomError(name, "line 1, column 1", "not well-formed XML: no element found")
        return root
    except ET.ParseError as exc:
        line, column = exc.position
        reason = str(exc).split(": line ")[0]
        raise SbomError(name, f"line {line}, column {column + 1}", f"not well-formed XML: {reason}") from None


_XML_SLICE = 1 << 16  # elements one slice can create before the limits are checked: about 20,000


def _near(text: str, at: int) -> str:
    return f"line {text.count(chr(10), 0, at) + 1} or later"


class _X:
    """Reads CycloneDX elements of one namespace, with XML paths for messages."""

    def __init__(self, ns: str, name: str) -> None:
        self.ns, self.name = ns, name
        self.prefix = f"{{{ns}}}"

    def kids(self, elem: ET.Element) -> dict[str, ET.Element]:
        """Local name → first child of that name in the namespace (one pass over the children)."""
        out: dict[str, ET.Element] = {}
        cut = len(self.prefix)
        for child in elem:
            tag = child.tag
            if isinstance(tag, str) and tag.startswith(self.prefix):
                out.setdefault(tag[cut:], child)
        return out

    @staticmethod
    def strip(elem: ET.Element | None) -> str | None:
        if elem is None or elem.text is None:
            return None
        return elem.text.strip() or None

    def children(self, elem: ET.Element | None, tag: str, where: str) -> Iterator[tuple[ET.Element, str]]:
        if elem is None:
            return
        for i, child in enumerate(elem.iterfind(self.prefix + tag), 1):
            yield child, f"{where}/{tag}[{i}]"

    def child(self, elem: ET.Element | None, tag: str) -> ET.Element | None:
        return None if elem is None else elem.find(self.prefix + tag)

    def text(self, elem: ET.Element | None, *path: str) -> str | None:
        for tag in path:
            elem = self.child(elem, tag)
        if elem is None or elem.text is None:
            return None
        return elem.text.strip() or None

    def component(self, c: ET.Element, where: str, metadata: ET.Element | None = None) -> _RawComponent:
        k = self.kids(c)
        vendor = self.text(k.get("manufacturer"), "name")
        if metadata is not None:
            vendor = vendor or self.text(metadata, "manufacture", "name")
        vendor = vendor or self.text(k.get("supplier"), "name")
        if metadata is not None:
            vendor = vendor or self.text(metadata, "supplier", "name")
        vendor = vendor or self.strip(k.get("publisher"))
        hashes = [(here, h.get("alg"), self.strip(h))
                  for h, here in self.children(k.get("hashes"), "hash", f"{where}/hashes")]
        return _RawComponent(
            where=where, type=c.get("type") or None, name=self.strip(k.get("name")),
            version=self.strip(k.get("version")), group=self.strip(k.get("group")), vendor=vendor,
            purl=self.strip(k.get("purl")),
            cpe=self.strip(k.get("cpe")), hashes=hashes, bom_ref=c.get("bom-ref") or None,
            type_where=f"{where}/@type")

    def components(self, parent: ET.Element, where: str, count: _Counter, depth: int) -> Iterator[_RawComponent]:
        listed = list(self.children(self.child(parent, "components"), "component", f"{where}/components"))
        if not listed:
            return
        if depth > MAX_DEPTH:
            raise SbomError(self.name, f"{where}/components", f"components nested deeper than {MAX_DEPTH}")
        count.add(f"{where}/components", len(listed))
        for c, here in listed:
            yield self.component(c, here)
            yield from self.components(c, here, count, depth + 1)


def _read_xml(root: ET.Element, name: str) -> _Raw:
    ns, _, local = root.tag[1:].partition("}") if root.tag.startswith("{") else ("", "", root.tag)
    found = _NAMESPACE.fullmatch(ns)
    if local != "bom" or found is None:
        raise SbomError(name, f"/{local}", f"not a CycloneDX BOM: the root element is {_clip(root.tag)}, "
                                           "not bom in a http://cyclonedx.org/schema/bom/<version> namespace")
    spec = _check_spec(found.group(1), "/bom/@xmlns", name)
    x = _X(ns, name)
    metadata = x.child(root, "metadata")
    count = _Counter(name, MAX_COMPONENTS, "components")
    subject = None
    components: list[_RawComponent] = []
    subject_elem = x.child(metadata, "component")
    if subject_elem is not None:
        subject = x.component(subject_elem, "/bom/metadata/component", metadata)
        components.extend(x.components(subject_elem, "/bom/metadata/component", count, 1))
    components.extend(x.components(root, "/bom", count, 1))
    vex_count = _Counter(name, MAX_VEX, "VEX statements (vulnerability and affected ref pairs)")
    vulns = []
    for v, where in x.children(x.child(root, "vulnerabilities"), "vulnerability", "/bom/vulnerabilities"):
        analysis = x.child(v, "analysis")
        a_where = f"{where}/analysis"
        responses = [(r.text or "").strip() for r, _ in x.children(x.child(analysis, "responses"), "response", "")]
        refs = [(f"{here}/ref", x.text(t, "ref"))
                for t, here in x.children(x.child(v, "affects"), "target", f"{where}/affects")]
        vex_count.add(f"{where}/affects", max(len(refs), 1))
        vulns.append(_RawVuln(
            where=where, id=x.text(v, "id"), state=x.text(analysis, "state"),
            justification=x.text(analysis, "justification"), responses=responses,
            detail=x.text(analysis, "detail"), refs=refs, analysis_where=a_where))
    return _Raw(spec, root.get("serialNumber") or None, subject, components, vulns)
