"""From an advisory to rollouts: the devices it affects, grouped by their true manufacturer's
product, each upgraded to the catalog's firmware that fixes it.

The fixed version comes from the advisory (`vendor_fix` / `fixed` statements); the release is the
newest verified catalog image of that product at or above it (vendor ordering). A product with no
such image is reported with what to add, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from cityward.adapters.storage import vuln_frames
from cityward.adapters.storage.models import (
    DeviceRow,
    DeviceStateRow,
    FirmwareReleaseRow,
    ProductRow,
    RolloutActionRow,
    RolloutRow,
    VulnMatchRow,
)
from cityward.adapters.storage.scoping import scope_clause
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain import advisory_versions as av
from cityward.domain.access import Action, require_device_details, require_device_write
from cityward.domain.organizations import Caller
from cityward.domain.products import VersionScheme, product_key
from cityward.domain.rollouts import ActionStatus, Operation, PlanSummary, WaveOptions
from cityward.errors import InvalidInput, Problem
from cityward.services import rollouts
from cityward.services.rollouts import RolloutRequest, Target


@dataclass(frozen=True)
class ProductFix:
    product: str  # the true manufacturer's "Brand Model"
    brand: str
    model: str
    devices: tuple[str, ...]
    fixed_version: str | None
    release: int | None  # the catalog image chosen, None: none fixes it
    release_version: str | None
    rollout: int | None = None
    plan: PlanSummary | None = None
    problem: str | None = None  # why nothing was planned for this product


def _key(version: str) -> str | None:
    return av.sort_key(version, VersionScheme.VENDOR)


def fixes(uow_factory: UnitOfWorkFactory, caller: Caller, advisory: str) -> list[ProductFix]:
    """Per true-origin product: its affected devices (in the caller's scope), the fixed version the
    advisory names, and the catalog image that provides it."""
    scope = require_device_write(caller, Action.ROLLOUT)
    with uow_factory() as uow:
        s = uow.session
        cves = rollouts.advisory_cves(s, advisory)
        rows = s.execute(
            select(DeviceRow.id, VulnMatchRow.fixed_version, ProductRow.origin_brand, ProductRow.origin_model)
            .join(DeviceRow, vuln_frames.on_device())
            .join(ProductRow, ProductRow.id == DeviceRow.product_id)
            .where(VulnMatchRow.cve.in_(cves), scope_clause(s, scope))).all()
        groups: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
        for device_id, fixed, brand, model in rows:
            devices, fixed_versions = groups.setdefault((brand, model), (set(), set()))
            devices.add(device_id)
            if fixed:
                fixed_versions.add(fixed)
        out: list[ProductFix] = []
        for (brand, model), (devices, fixed_versions) in sorted(groups.items()):
            bk, mk = product_key(brand, model)
            releases = s.execute(select(FirmwareReleaseRow.id, FirmwareReleaseRow.version).where(
                FirmwareReleaseRow.brand_key == bk, FirmwareReleaseRow.model_key == mk)).all()
            keyed = [(k, rid, version) for rid, version in releases if (k := _key(version)) is not None]
            wanted = max(fixed_versions, key=lambda v: _key(v) or "", default=None)
            floor = _key(wanted) if wanted else None
            usable = sorted(r for r in keyed if floor is not None and r[0] >= floor)
            name = f"{brand} {model}"
            if wanted is None:
                out.append(ProductFix(name, brand, model, tuple(sorted(devices)), None, None, None,
                                      problem="the advisory names no fixed version for this product"))
            elif not usable:
                out.append(ProductFix(name, brand, model, tuple(sorted(devices)), wanted, None, None,
                                      problem=f"no firmware {wanted} or later in the catalog: add the "
                                              f"manufacturer's signed image with `cityward firmware add`"))
            else:
                _k, rid, version = usable[-1]
                out.append(ProductFix(name, brand, model, tuple(sorted(devices)), wanted, rid, version))
    if not out:
        raise InvalidInput(f"advisory {advisory!r} affects no device in your scope",
                           [Problem("no stored match", field="advisory")],
                           hint="`cityward advisories match` re-matches the fleet")
    return out


def from_advisory(uow_factory: UnitOfWorkFactory, caller: Caller, advisory: str, options: WaveOptions,
                  store: Path, *, create: bool) -> list[ProductFix]:
    """One `upgrade_firmware` rollout per affected product that has a fixing image: planned
    (dry run), or stored with `create`. Products without one are returned with the reason."""
    done: list[ProductFix] = []
    for fix in fixes(uow_factory, caller, advisory):
        if fix.release is None:
            done.append(fix)
            continue
        req = RolloutRequest(f"{advisory}: {fix.product} → {fix.release_version}", Operation.UPGRADE_FIRMWARE,
                             Target(device_ids=fix.devices, advisory=advisory), options, release=fix.release)
        try:
            if create:
                rid, summary = rollouts.create(uow_factory, caller, req, store)
                done.append(ProductFix(**{**fix.__dict__, "rollout": rid, "plan": summary}))
            else:
                done.append(ProductFix(**{**fix.__dict__, "plan": rollouts.plan(uow_factory, caller, req, store)}))
        except InvalidInput as exc:  # e.g. every device already runs it, or is in another rollout
            done.append(ProductFix(**{**fix.__dict__, "problem": str(exc)}))
    return done


@dataclass(frozen=True)
class Reported:
    """How far the devices some rollouts changed have told the platform about it."""

    changed: int  # devices with a succeeded action in the rollouts
    reported: int  # of them, those whose stored state shows the change

    @property
    def waiting(self) -> int:
        return self.changed - self.reported


def reported_changes(uow_factory: UnitOfWorkFactory, caller: Caller, rollout_ids: list[int]) -> Reported:
    """Which devices the rollouts changed already report the change: an upgrade's firmware version,
    a rotated password's credential state (`unique`), or any report since the action succeeded for
    other operations. An audit reads reported facts, so one run right after the rollouts, before
    the devices have spoken (or been polled), would still see the old ones."""
    scope = require_device_details(caller)
    if not rollout_ids:
        return Reported(0, 0)
    with uow_factory() as uow:
        s = uow.session
        rows = s.execute(
            select(RolloutRow.operation, RolloutRow.params, RolloutActionRow.updated_at,
                   DeviceStateRow.firmware_version, DeviceStateRow.credential_state, DeviceStateRow.last_seen)
            .join(RolloutActionRow, RolloutActionRow.rollout_id == RolloutRow.id)
            .join(DeviceRow, DeviceRow.id == RolloutActionRow.device_id)
            .outerjoin(DeviceStateRow, DeviceStateRow.device_id == RolloutActionRow.device_id)
            .where(RolloutRow.id.in_(rollout_ids), RolloutActionRow.status == ActionStatus.SUCCEEDED.value,
                   scope_clause(s, scope))).all()
        release_ids = {int(p["release"]) for op, p, *_ in rows if op == Operation.UPGRADE_FIRMWARE and "release" in p}
        versions = dict(s.execute(select(FirmwareReleaseRow.id, FirmwareReleaseRow.version)
                                  .where(FirmwareReleaseRow.id.in_(release_ids))).all()) if release_ids else {}
    reported = 0
    for operation, params, succeeded_at, firmware, credential, last_seen in rows:
        if operation == Operation.UPGRADE_FIRMWARE:
            reported += firmware is not None and firmware == versions.get(int(params.get("release", 0)))
        elif operation == Operation.ROTATE_PASSWORD:
            reported += credential == "unique"
        else:
            reported += last_seen is not None and last_seen >= succeeded_at
    return Reported(len(rows), reported)
