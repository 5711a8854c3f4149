"""CycloneDX SBOMs of firmware releases: what software each image carries, so advisories about a
component (busybox, OpenSSL, lighttpd…) reach every device running an image that contains it.

An SBOM belongs to a release in the firmware catalog; importing one replaces the release's previous
SBOM, in one transaction, and re-matches the CVEs whose statements name its components. The
SBOM's own VEX (a component the manufacturer says is not affected) takes precedence like any VEX.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert, select

from cityward.adapters.storage.models import AdvisoryEntryRow, FirmwareReleaseRow, SbomComponentRow, SbomRow, SbomVexRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain import cyclonedx
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.domain.products import product_key
from cityward.errors import InvalidInput, NotFound, PermissionDenied

MAX_SBOM_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class SbomImport:
    release: int
    product: str
    version: str
    spec_version: str
    components: int
    duplicates: int
    vex_not_affected: int
    cves: tuple[str, ...]  # CVEs whose statements name one of its components: re-match these


def _require_sbom_writer(caller: Caller, brand: str) -> None:
    """City operators, or the manufacturer's own organization for its images."""
    if caller.is_city and caller.role is not Role.VIEWER:
        return
    if caller.org_kind is OrgKind.MANUFACTURER and caller.role is not Role.VIEWER and caller.brand and \
            product_key(caller.brand, "")[0] == product_key(brand, "")[0]:
        return
    raise PermissionDenied(f"only a city operator or {brand}'s own organization may attach an SBOM to its firmware")


def import_sbom(uow_factory: UnitOfWorkFactory, caller: Caller, path: Path, release_id: int) -> SbomImport:
    with uow_factory() as uow:  # who may, before reading up to 50 MB for them
        found = uow.session.get(FirmwareReleaseRow, release_id)
        if found is None:
            raise NotFound(f"firmware release {release_id} not found", hint="cityward firmware list")
        _require_sbom_writer(caller, found.brand)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read it ({exc.strerror})") from None
    if size > MAX_SBOM_BYTES:
        raise InvalidInput(f"{path}: {size // 2**20} MB is over the {MAX_SBOM_BYTES // 2**20} MB SBOM limit")
    data = path.read_bytes()
    sbom = cyclonedx.parse_sbom(data, path.name)
    rows = []
    for c in sbom.components:
        key = cyclonedx.component_key(c)
        rows.append({"release_id": release_id, "purl_key": key[0] if key else None, "name": c.name[:300],
                     "version": (key[1] if key and key[1] else c.version or None), "type": c.type[:40]})
    vex = sorted(cyclonedx.vex_not_affected(sbom))
    with uow_factory(write=True) as uow:
        s = uow.session
        release = s.get(FirmwareReleaseRow, release_id)
        assert release is not None  # catalog releases are never deleted
        # The previous SBOM, children first (SQLite enforces no cascades here).
        s.execute(delete(SbomComponentRow).where(SbomComponentRow.release_id == release_id))
        s.execute(delete(SbomVexRow).where(SbomVexRow.release_id == release_id))
        s.execute(delete(SbomRow).where(SbomRow.release_id == release_id))
        subject = f"{sbom.subject.name} {sbom.subject.version or ''}".strip() if sbom.subject else None
        s.add(SbomRow(release_id=release_id, spec_version=sbom.spec_version, serial_number=sbom.serial_number,
                      subject=(subject or "")[:300] or None, components=len(rows), duplicates=sbom.duplicates,
                      sha256=hashlib.sha256(data).hexdigest(), imported_by=caller.actor, imported_at=uow.clock()))
        s.flush()
        for i in range(0, len(rows), 5000):
            s.execute(insert(SbomComponentRow), rows[i:i + 5000])
        if vex:
            s.execute(insert(SbomVexRow), [{"release_id": release_id, "cve": cve[:64], "purl_key": key[:300]}
                                           for cve, key in vex])
        keys = sorted({r["purl_key"] for r in rows if r["purl_key"]})
        cves: set[str] = set()
        for i in range(0, len(keys), 500):
            cves.update(s.scalars(select(AdvisoryEntryRow.cve).where(AdvisoryEntryRow.purl_key.in_(keys[i:i + 500]))))
        result = SbomImport(release_id, f"{release.brand} {release.model}", release.version, sbom.spec_version,
                            len(rows), sbom.duplicates, len(vex), tuple(sorted(cves)))
        uow.record(caller, "sbom.imported", "firmware_release", release_id, after={
            "spec_version": sbom.spec_version, "components": len(rows), "duplicates": sbom.duplicates,
            "vex_not_affected": len(vex), "sha256": hashlib.sha256(data).hexdigest()})
        uow.commit()
    return result
