"""CycloneDX SBOMs: the three fixture formats agree; bad, hostile and huge input is refused with
SbomError naming the document and the place; fuzzing never escapes SbomError."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, TypeVar
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityward.domain import limits
from cityward.domain.cyclonedx import (
    MAX_COMPONENTS,
    MAX_DEPTH,
    Component,
    Hash,
    SbomError,
    VexState,
    _fast_purl,  # the fast path must agree with packageurl
    _Purl,
    _slow_purl,
    component_key,
    parse_sbom,
    purl_key,
    vex_not_affected,
)
from cityward.errors import InvalidInput

SBOMS = Path(__file__).parent / "fixtures" / "advisories" / "sbom"
FIXTURES = ("camera-firmware-1.4.xml", "camera-firmware-1.5.json", "camera-firmware-1.6.json")
NS14 = "http://cyclonedx.org/schema/bom/1.4"
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def fixture(name: str) -> bytes:
    return (SBOMS / name).read_bytes()


def bom(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1, "components": []}
    doc.update(fields)
    return doc


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def refused(data: bytes, *words: str, name: str = "x.cdx") -> SbomError:
    with pytest.raises(SbomError) as info:
        parse_sbom(data, name)
    err = info.value
    assert isinstance(err, InvalidInput)
    assert str(err).startswith(f"{name}: ")
    for word in words:
        assert word in str(err), (word, str(err))
    return err


# --- the fixtures ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_parses(name: str) -> None:
    sbom = parse_sbom(fixture(name), name)
    assert sbom.spec_version == name.rsplit("-", 1)[1].rsplit(".", 1)[0]
    assert sbom.serial_number == "urn:uuid:6f1d2c8e-3b7a-4c55-9a0e-2f4b8d1c7e90"
    assert sbom.subject == Component(
        type="firmware", name="cityward-reference-camera-firmware", version="1.5.0",
        vendor="cityward reference build", purl="pkg:generic/cityward/camera-firmware@1.5.0",
        bom_ref="fw-camera-1.5.0")
    assert sbom.duplicates == 0
    assert {(c.type, c.name, c.version, c.purl) for c in sbom.components} == {
        ("application", "busybox", "1.34.1", "pkg:generic/busybox@1.34.1"),
        ("library", "openssl", "1.1.1s", "pkg:generic/openssl@1.1.1s"),
        ("application", "lighttpd", "1.4.63", "pkg:generic/lighttpd@1.4.63"),
    }
    openssl = next(c for c in sbom.components if c.name == "openssl")
    assert openssl.cpe == "cpe:2.3:a:openssl:openssl:1.1.1s:*:*:*:*:*:*:*"
    assert openssl.bom_ref == "pkg:generic/openssl@1.1.1s"
    assert {(v.id, v.component.name if v.component else None, v.state, v.justification, v.responses)
            for v in sbom.vex} == {
        ("CVE-2022-22707", "lighttpd", VexState.NOT_AFFECTED, "code_not_reachable", ()),
        ("CVE-2022-48174", "busybox", VexState.IN_TRIAGE, None, ()),
        ("CVE-2023-0286", "openssl", VexState.EXPLOITABLE, None, ("update",)),
    }
    assert vex_not_affected(sbom) == {("CVE-2022-22707", "generic/lighttpd")}


def test_the_three_formats_agree() -> None:
    sboms = [parse_sbom(fixture(name), name) for name in FIXTURES]
    assert len({s.subject for s in sboms}) == 1
    assert len({frozenset(s.components) for s in sboms}) == 1
    assert len({frozenset(s.vex) for s in sboms}) == 1


def test_keys() -> None:
    assert purl_key("pkg:generic/Cityward/Camera-Firmware@1.5.0") == ("generic/cityward/camera-firmware", "1.5.0")
    assert purl_key("pkg:npm/%40Angular/Core") == ("npm/@angular/core", None)
    assert purl_key("not a purl") is None
    c = Component(type="library", name="zlib", version="1.3", purl="pkg:generic/zlib")
    assert component_key(c) == ("generic/zlib", "1.3")  # the component's version when the PURL has none
    assert component_key(Component(type="library", name="zlib")) is None


PURL_TYPES = ["generic", "deb", "maven", "GitHub", "cpan", "golang", "apk", "rpm", "npm", "pypi", "oci"]
safe_part = st.text(alphabet="aZ9._~+-", min_size=1, max_size=5)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(PURL_TYPES), st.lists(safe_part, max_size=2), safe_part,
    st.none() | st.text(alphabet="aZ1._~+:-", min_size=1, max_size=6),
    st.lists(st.tuples(st.from_regex(r"[a-zA-Z][a-zA-Z0-9._-]{0,3}", fullmatch=True),
                       st.text(alphabet="aZ9:/._~+-", min_size=1, max_size=4)), max_size=3),
)
def test_fast_purl_agrees_with_packageurl(
    ptype: str, namespace: list[str], name: str, version: str | None, qualifiers: list[tuple[str, str]],
) -> None:
    purl = f"pkg:{ptype}/" + "".join(f"{seg}/" for seg in namespace) + name
    purl += f"@{version}" if version is not None else ""
    purl += "?" + "&".join(f"{k}={v}" for k, v in qualifiers) if qualifiers else ""
    fast = _fast_purl(purl)
    assert (fast is None) == (ptype in ("npm", "pypi", "oci")), purl  # their names have rules of their own
    if fast is not None:
        assert _slow_purl(purl) == fast, purl


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="pkg:/@?#=&%aZ9._~+- ", max_size=30).map(lambda t: "pkg:" + t))
def test_fast_purl_never_disagrees(purl: str) -> None:
    fast = _fast_purl(purl)
    if fast is not None:
        assert _slow_purl(purl) == fast, purl


def test_fast_purl_takes_the_common_shapes() -> None:
    assert _fast_purl("pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=arm64&distro=debian-12") is not None
    assert _fast_purl("pkg:generic/busybox@1.34.1") is not None
    assert _fast_purl("pkg:pypi/Django_Rest@1") is None  # packageurl rewrites pypi names
    assert _fast_purl("pkg:npm/%40angular/core@1") is None  # percent-encoding
    assert _slow_purl("pkg:pypi/Django_Rest@1") == _Purl("pypi/django-rest", "1", (), None)


def test_subject_device_hashes_and_nested_components() -> None:
    doc = bom(
        specVersion="1.6",
        metadata={"component": {"type": "device", "name": "DS-2CD2142FWD-I", "manufacturer": {"name": "Hikvision"},
                                "hashes": [{"alg": "SHA-256", "content": SHA256.upper()}],
                                "components": [{"type": "firmware", "name": "IPC_G5", "version": "5.5.113"}]}},
        components=[{"type": "operating-system", "name": "linux", "version": "4.9", "purl": "pkg:generic/linux@4.9",
                     "components": [{"type": "library", "name": "musl", "group": "libc", "version": "1.2"}]}],
    )
    sbom = parse_sbom(dumps(doc), "dev.json")
    assert sbom.subject is not None
    assert (sbom.subject.type, sbom.subject.vendor) == ("device", "Hikvision")
    assert sbom.subject.hashes == (Hash("SHA-256", SHA256),)
    assert sbom.subject.sha256 == (SHA256,)
    assert [(c.type, c.name, c.group) for c in sbom.components] == [
        ("firmware", "IPC_G5", None), ("operating-system", "linux", None), ("library", "musl", "libc")]


def test_xml_hashes_and_bom_link() -> None:
    xml = f"""<?xml version="1.0"?>
<bom xmlns="{NS14}" serialNumber="urn:uuid:11111111-2222-3333-4444-555555555555">
  <components><component type="library" bom-ref="z">
    <name>zlib</name><version>1.2.13</version><purl>pkg:generic/zlib@1.2.13</purl>
    <hashes><hash alg="SHA-256">{SHA256}</hash></hashes>
  </component></components>
  <vulnerabilities><vulnerability><id>CVE-2022-37434</id>
    <analysis><state>false_positive</state></analysis>
    <affects><target><ref>urn:cdx:11111111-2222-3333-4444-555555555555/1#z</ref></target></affects>
  </vulnerability></vulnerabilities>
</bom>"""
    sbom = parse_sbom(xml.encode("utf-16"), "z.xml")
    assert sbom.components[0].sha256 == (SHA256,)
    assert sbom.vex[0].component == sbom.components[0]
    assert vex_not_affected(sbom) == {("CVE-2022-37434", "generic/zlib")}


def test_vex_not_affected_is_conservative() -> None:
    comps = [{"type": "library", "name": "openssl", "version": v, "purl": f"pkg:generic/openssl@{v}", "bom-ref": v}
             for v in ("1.1.1s", "3.0.5")]
    vulns = [{"id": "CVE-2022-3602", "analysis": {"state": "not_affected", "justification": "code_not_present"},
              "affects": [{"ref": "1.1.1s"}]},
             {"id": "CVE-2022-3602", "affects": [{"ref": "3.0.5"}]},  # no analysis: affected
             {"id": "CVE-2023-0286", "analysis": {"state": "resolved"},
              "affects": [{"ref": "1.1.1s"}, {"ref": "3.0.5"}]},
             {"id": "CVE-2024-0001", "analysis": {"state": "not_affected"}, "affects": [{"ref": "nowhere"}]}]
    sbom = parse_sbom(dumps(bom(components=comps, vulnerabilities=vulns)), "two.json")
    assert vex_not_affected(sbom) == {("CVE-2023-0286", "generic/openssl")}
    assert next(v for v in sbom.vex if v.ref == "nowhere").component is None


# --- bad input -------------------------------------------------------------------------------


def test_malformed_json_has_line_and_column() -> None:
    refused(b'{\n  "bomFormat": "CycloneDX",\n  "specVersion" "1.5"\n}', "line 3, column 17", "not well-formed JSON")


def test_malformed_xml_has_line_and_column() -> None:
    refused(f'<bom xmlns="{NS14}">\n  <components>\n</bom>'.encode(), "line 3, column 3", "not well-formed XML")


@pytest.mark.parametrize("xml", [
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>\n<bom>&lol2;</bom>',
    b'<!DOCTYPE bom SYSTEM "file:///etc/passwd"><bom xmlns="http://cyclonedx.org/schema/bom/1.5"/>',
    b'<bom xmlns="http://cyclonedx.org/schema/bom/1.5"><!ENTITY x "y"></bom>',
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY a "b">]><bom/>'.encode("utf-16"),
])
def test_dtd_and_entities_refused(xml: bytes) -> None:
    err = refused(xml, "is refused", "XXE")
    assert err.location.startswith("line ")


def test_unsupported_versions() -> None:
    for version in ("1.2", "1.3", "2.0"):
        refused(dumps(bom(specVersion=version)), f"unsupported CycloneDX version {version}", "/specVersion")
        refused(f'<bom xmlns="http://cyclonedx.org/schema/bom/{version}"/>'.encode(),
                f"unsupported CycloneDX version {version}")
    refused(dumps(bom(specVersion=1.5)), "must be a string")
    refused(b'<bom xmlns="http://example.com/bom"/>', "not a CycloneDX BOM")


def test_missing_or_wrong_bom_format() -> None:
    doc = bom()
    del doc["bomFormat"]
    refused(dumps(doc), "/bomFormat", "missing")
    refused(dumps(bom(bomFormat="SPDX")), "/bomFormat", "'SPDX'")
    doc = bom()
    del doc["specVersion"]
    refused(dumps(doc), "/specVersion: missing")
    refused(b"[]", "not a JSON object")
    refused(b"hello", "neither JSON nor XML")
    refused(b"\xff\xff{}", "not UTF-8")


def test_components_need_name_and_known_type() -> None:
    refused(dumps(bom(components=[{"type": "library"}])), "/components/0: component without a name")
    refused(dumps(bom(components=[{"name": "x"}])), "/components/0/type: component without a type")
    refused(dumps(bom(components=[{"type": "cryptographic-asset", "name": "x"}])),  # new in 1.6
            "/components/0/type", "not a CycloneDX 1.5 component type")
    refused(dumps(bom(components=[{"type": "library", "name": 7}])), "/components/0/name: must be a string")
    xml = f'<bom xmlns="{NS14}"><components><component type="library"/><component/></components></bom>'
    refused(xml.encode(), "/bom/components/component[1]: component without a name")


def test_bad_purl() -> None:
    doc = bom(components=[{"type": "library", "name": "a", "purl": "pkg:generic/a@1"},
                          {"type": "library", "name": "b", "purl": "generic/b@1"}])
    refused(dumps(doc), "/components/1/purl", "not a package URL")
    xml = f'<bom xmlns="{NS14}"><metadata><component type="firmware"><name>f</name><purl>pkg:</purl></component>' \
          "</metadata></bom>"
    refused(xml.encode(), "/bom/metadata/component/purl", "not a package URL")


@pytest.mark.parametrize(("alg", "content", "words"), [
    ("SHA-256", SHA256[:-1], ("SHA-256 hash", "64 hex digits")),
    ("SHA-256", "z" * 64, ("64 hex digits",)),
    ("SHA-1", SHA256, ("40 hex digits",)),
    ("SHA-257", SHA256, ("unknown hash algorithm",)),
    ("MD5", None, ("32 hex digits",)),
])
def test_bad_hash(alg: str, content: str | None, words: tuple[str, ...]) -> None:
    h = {"alg": alg} if content is None else {"alg": alg, "content": content}
    doc = bom(components=[{"type": "file", "name": "rootfs.img", "hashes": [{"alg": "MD5", "content": "0" * 32}, h]}])
    refused(dumps(doc), "/components/0/hashes/1", *words)


def test_bad_vex() -> None:
    def vuln(**fields: Any) -> bytes:
        v = {"id": "CVE-2024-1", "affects": [{"ref": "a"}]}
        v.update(fields)
        return dumps(bom(vulnerabilities=[v]))
    refused(vuln(analysis={"state": "fine"}), "/vulnerabilities/0/analysis/state", "not a VEX state")
    refused(vuln(analysis={"justification": "trust me"}), "/analysis/justification", "not a VEX justification")
    refused(vuln(analysis={"response": ["pray"]}), "not a VEX response")
    refused(vuln(id=None), "/vulnerabilities/0: vulnerability without an id")
    refused(vuln(affects=[{}]), "/vulnerabilities/0/affects/0", "empty ref")


def test_too_many_components() -> None:
    item = '{"type":"library","name":"x"}'
    data = ('{"bomFormat":"CycloneDX","specVersion":"1.5","components":[' + ",".join([item] * (MAX_COMPONENTS + 1))
            + "]}").encode()
    refused(data, f"more than {MAX_COMPONENTS:,} components")
    nested = bom(components=[{"type": "library", "name": "x", "components": [{"type": "library", "name": "y"}]
                              * MAX_COMPONENTS}])
    refused(dumps(nested), "/components/0/components", f"more than {MAX_COMPONENTS:,} components")


def test_too_large() -> None:
    refused(b" " * (50 * 1024 * 1024 + 1), "at most 52,428,800")


def test_duplicates_are_counted_not_kept() -> None:
    item = {"type": "library", "name": "busybox", "version": "1.34.1", "purl": "pkg:generic/busybox@1.34.1"}
    nameless = {"type": "library", "name": "blob", "version": "1"}
    comps = [dict(item, **{"bom-ref": f"bb-{i}"}) for i in range(5_000)] + [nameless] * 3
    vulns = [{"id": "CVE-2022-48174", "analysis": {"state": "not_affected"}, "affects": [{"ref": "bb-4999"}]}]
    data = dumps(bom(components=comps, vulnerabilities=vulns))
    started = time.perf_counter()
    sbom = parse_sbom(data, "dups.json")
    assert time.perf_counter() - started < 1.0
    assert len(sbom.components) == 2
    assert sbom.duplicates == 5_001
    assert sbom.vex[0].component == sbom.components[0]  # a dropped copy's bom-ref names the kept one
    assert vex_not_affected(sbom) == {("CVE-2022-48174", "generic/busybox")}


def test_deep_nesting() -> None:
    def nest(levels: int) -> dict[str, Any]:
        c: dict[str, Any] = {"type": "library", "name": f"c{levels}"}
        for n in range(levels - 1):
            c = {"type": "library", "name": f"c{n}", "components": [c]}
        return c
    assert len(parse_sbom(dumps(bom(components=[nest(MAX_DEPTH)])), "ok.json").components) == MAX_DEPTH
    refused(dumps(bom(components=[nest(MAX_DEPTH + 1)])), f"components nested deeper than {MAX_DEPTH}")
    refused(b'{"bomFormat": "CycloneDX", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            f"over the limit of nesting depth {limits.DOCUMENT_JSON_DEPTH}")
    xml = f'<bom xmlns="{NS14}">' + "<a>" * 100_000 + "</a>" * 100_000 + "</bom>"
    refused(xml.encode(), f"over the limit of nesting depth {limits.XML_DEPTH}")  # refused before a tree is built
    ok = f'<bom xmlns="{NS14}">' + "<a>" * (limits.XML_DEPTH - 1) + "</a>" * (limits.XML_DEPTH - 1) + "</bom>"
    assert parse_sbom(ok.encode(), "deep.xml").components == ()
    deep = f'<bom xmlns="{NS14}">' + '<components><component type="library"><name>x</name>' * (MAX_DEPTH + 1) \
        + "</component></components>" * (MAX_DEPTH + 1) + "</bom>"
    refused(deep.encode(), f"components nested deeper than {MAX_DEPTH}")


# --- fuzzing ---------------------------------------------------------------------------------
# Structured SBOMs from pools of valid and invalid strings, rendered as JSON and as XML: both must
# give the same Sbom or the same reason for refusing it. Junk (arbitrary bytes, arbitrary JSON, JSON
# with CycloneDX's field names) must only ever raise SbomError.

T = TypeVar("T")


def pool(*values: str) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


def mostly(valid: st.SearchStrategy[T], *invalid: T) -> st.SearchStrategy[T]:
    """Valid values 29 times in 30, so that most generated SBOMs get past the first check."""
    return st.integers(0, 29).flatmap(lambda n: valid if n < 29 or not invalid else st.sampled_from(invalid))


REFS = pool("a", "b", "c", "urn:cdx:6f1d2c8e-3b7a-4c55-9a0e-2f4b8d1c7e90/1#a", "zzz")
HASHES = (("SHA-256", SHA256), ("SHA-1", SHA256[:40]), ("MD5", SHA256[:32]), ("BLAKE3", SHA256))
hashes = st.lists(mostly(st.sampled_from(HASHES), ("sha256", SHA256), ("SHA-256", "xyz"), ("MD5", SHA256)).map(
    lambda h: {"alg": h[0], "content": h[1]}), max_size=2)
components = st.recursive(
    st.fixed_dictionaries({
        "type": mostly(pool("library", "firmware", "device", "data"), "cryptographic-asset", "thing", ""),
        "name": mostly(pool("busybox", "openssl"), ""),
    }, optional={
        "version": pool("1.0", "1.1", ""), "group": pool("org", ""),
        "purl": mostly(pool("pkg:generic/busybox@1.0", "pkg:generic/openssl@1.1", "pkg:deb/debian/zlib@1?arch=x",
                            "pkg:npm/%40s/n@1"), "pkg:", "busybox"),
        "cpe": pool("cpe:2.3:a:busybox:busybox:1.0:*:*:*:*:*:*:*"), "bom-ref": REFS, "hashes": hashes,
        "supplier": pool("Vendor", "").map(lambda n: {"name": n}), "publisher": pool("Pub")}),
    lambda inner: st.tuples(inner, st.lists(inner, min_size=1, max_size=2)).map(
        lambda t: {**t[0], "components": t[1]}),
    max_leaves=6,
)
vulnerabilities = st.lists(st.fixed_dictionaries({
    "id": mostly(pool("CVE-2024-1", "CVE-2024-2"), ""),
    "affects": st.lists(REFS.map(lambda r: {"ref": r}), max_size=2),
}, optional={
    "analysis": st.fixed_dictionaries({}, optional={
        "state": mostly(pool("not_affected", "exploitable", "resolved", "false_positive", "in_triage"), "nope"),
        "justification": mostly(pool("code_not_present", "requires_configuration"), "bogus"),
        "detail": pool("<why & how>"),
        "response": st.lists(mostly(pool("update", "will_not_fix"), "pray"), max_size=2)}),
}), max_size=3)
structured = st.fixed_dictionaries(
    {"bomFormat": st.just("CycloneDX"), "specVersion": mostly(pool("1.4", "1.5", "1.6"), "1.3")},
    optional={"serialNumber": st.just("urn:uuid:6f1d2c8e-3b7a-4c55-9a0e-2f4b8d1c7e90"),
              "metadata": components.map(lambda c: {"component": c}),
              "components": st.lists(components, min_size=1, max_size=4), "vulnerabilities": vulnerabilities},
)


def to_xml(doc: dict[str, Any]) -> bytes:
    def text(tag: str, value: str) -> str:
        return f"<{tag}>{escape(value)}</{tag}>"

    def component(c: dict[str, Any]) -> str:
        attrs = "".join(f" {a}={quoteattr(c[a])}" for a in ("type", "bom-ref") if a in c)
        body = "".join(text(k, c[k]) for k in ("name", "version", "group", "purl", "cpe", "publisher") if k in c)
        if "supplier" in c:
            body += f"<supplier>{text('name', c['supplier']['name'])}</supplier>"
        if "hashes" in c:
            body += "<hashes>" + "".join(
                f"<hash{' alg=' + quoteattr(h['alg']) if 'alg' in h else ''}>{escape(h.get('content', ''))}</hash>"
                for h in c["hashes"]) + "</hashes>"
        if "components" in c:
            body += "<components>" + "".join(component(n) for n in c["components"]) + "</components>"
        return f"<component{attrs}>{body}</component>"

    def vulnerability(v: dict[str, Any]) -> str:
        body = text("id", v["id"]) if "id" in v else ""
        if "analysis" in v:
            a = v["analysis"]
            body += "<analysis>" + "".join(text(k, a[k]) for k in ("state", "justification", "detail") if k in a)
            if "response" in a:
                body += "<responses>" + "".join(text("response", r) for r in a["response"]) + "</responses>"
            body += "</analysis>"
        if "affects" in v:
            targets = "".join(f"<target>{text('ref', t['ref'])}</target>" for t in v["affects"])
            body += f"<affects>{targets}</affects>"
        return f"<vulnerability>{body}</vulnerability>"

    serial = f" serialNumber={quoteattr(doc['serialNumber'])}" if "serialNumber" in doc else ""
    body = ""
    if "metadata" in doc:
        body += f"<metadata>{component(doc['metadata']['component'])}</metadata>"
    if "components" in doc:
        body += "<components>" + "".join(component(c) for c in doc["components"]) + "</components>"
    if "vulnerabilities" in doc:
        body += "<vulnerabilities>" + "".join(vulnerability(v) for v in doc["vulnerabilities"]) + "</vulnerabilities>"
    ns = f"http://cyclonedx.org/schema/bom/{doc['specVersion']}"
    return f'<?xml version="1.0"?>\n<bom xmlns="{ns}"{serial} version="1">{body}</bom>'.encode()


def outcome(data: bytes) -> object:
    try:
        return parse_sbom(data, "sbom")
    except SbomError as exc:
        return exc.reason


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structured)
def test_json_and_xml_agree(doc: dict[str, Any]) -> None:
    from_json = outcome(dumps(doc))
    assert outcome(to_xml(doc)) == from_json


def test_xml_rendering_of_the_fixture_matches() -> None:
    doc = json.loads(fixture("camera-firmware-1.5.json"))
    assert parse_sbom(to_xml(doc), "sbom") == parse_sbom(dumps(doc), "sbom")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
FIELDS = ("type", "name", "version", "group", "purl", "cpe", "hashes", "components", "bom-ref", "supplier",
          "manufacturer", "publisher", "alg", "content", "id", "analysis", "affects", "ref", "state",
          "justification", "response")
near_values = st.recursive(
    pool("library", "x", "pkg:generic/x@1", "SHA-256", SHA256, "not_affected", "update") | json_values,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5),
    max_leaves=15,
)
near_boms = st.fixed_dictionaries(
    {"bomFormat": st.just("CycloneDX"), "specVersion": st.sampled_from(["1.4", "1.5", "1.6", "1.3", 1.5])},
    optional={"components": near_values, "metadata": near_values, "vulnerabilities": near_values,
              "serialNumber": near_values},
)


def only_sbom_errors(data: bytes) -> None:
    with contextlib.suppress(SbomError):
        parse_sbom(data, "fuzz")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: b"<" + b) | st.binary(max_size=200).map(
    lambda b: b"{" + b))
def test_fuzz_bytes(data: bytes) -> None:
    only_sbom_errors(data)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values | near_boms)
def test_fuzz_json(doc: Any) -> None:
    only_sbom_errors(json.dumps(doc).encode())
