"""`cityward mqtt provision`: one broker account per MQTT device, gateway topology, Mosquitto files.

Passwords are generated here, kept encrypted (device_secrets, purpose mqtt) and handed out once in
the installer's bundle (mode 0600). Re-provisioning keeps existing passwords unless asked to
rotate, so devices already in the field keep working.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from cityward.adapters import mosquitto
from cityward.adapters.mosquitto import PLATFORM_USERNAME, BrokerAccount
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import BrokerRouteRow, DeviceRow, DeviceSecretRow
from cityward.adapters.storage.scoping import zone_tree
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import require_city_admin
from cityward.domain.organizations import Caller
from cityward.domain.responsibility import zone_chain
from cityward.services.credentials import MQTT, store_secrets


@dataclass
class ProvisionReport:
    directory: Path
    devices: int = 0  # direct accounts
    gateways: int = 0
    behind_gateways: int = 0
    new_passwords: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (device id, why)
    files: dict[str, str] = field(default_factory=dict)


def _password() -> str:
    return secrets.token_urlsafe(24)  # 32 characters, 192 bits


def provision(uow_factory: UnitOfWorkFactory, caller: Caller, box: SecretBox, out_dir: Path, *,
              broker_url: str, port: int = 1883, via_gateways: bool = False, rotate: bool = False) -> ProvisionReport:
    """Accounts for every MQTT device; with `via_gateways`, devices sit behind an MQTT gateway of
    their zone (or the nearest zone above that has one) and only gateways get accounts."""
    require_city_admin(caller, "provision broker accounts")
    report = ProvisionReport(out_dir)
    with uow_factory(write=True) as uow:
        s = uow.session
        rows = s.execute(select(DeviceRow.id, DeviceRow.kind, DeviceRow.zone_id)
                         .where(DeviceRow.protocol == "mqtt").order_by(DeviceRow.id)).all()
        usable = []
        for device_id, kind, zone_id in rows:
            try:
                mosquitto.validate_mqtt_id(device_id)
            except ValueError as exc:
                report.skipped.append((device_id, str(exc)))
                continue
            usable.append((device_id, kind, zone_id))
        routes = _topology(s, usable) if via_gateways else {d: None for d, _k, _z in usable}
        with_account = sorted({d for d, gw in routes.items() if gw is None} | {PLATFORM_USERNAME})
        stored = {d: box.open(d, MQTT, blob) for d, blob in s.execute(
            select(DeviceSecretRow.device_id, DeviceSecretRow.ciphertext).where(DeviceSecretRow.purpose == MQTT))}
        passwords = {d: (stored[d] if d in stored and not rotate else _password()) for d in with_account}
        fresh = {d: p for d, p in passwords.items() if stored.get(d) != p}
        report.new_passwords = len(fresh)
        now = uow.clock()
        store_secrets(s, box, MQTT, fresh, now)
        children: dict[str, list[str]] = defaultdict(list)
        for d, gw in routes.items():
            if gw is not None:
                children[gw].append(d)
        accounts = [BrokerAccount(PLATFORM_USERNAME, passwords[PLATFORM_USERNAME], "platform")]
        for d in with_account:
            if d == PLATFORM_USERNAME:
                continue
            if d in children:
                accounts.append(BrokerAccount(d, passwords[d], "gateway", tuple(sorted(children[d]))))
            else:
                accounts.append(BrokerAccount(d, passwords[d], "device"))
        report.gateways = len(children)
        report.devices = len(with_account) - 1 - report.gateways
        report.behind_gateways = sum(len(c) for c in children.values())

        s.execute(delete(BrokerRouteRow))
        if routes:
            s.execute(insert(BrokerRouteRow), [{"device_id": d, "gateway_id": gw, "provisioned_at": now}
                                               for d, gw in routes.items()])
        uow.record(caller, "broker.provisioned", "broker", broker_url, after={
            "direct": report.devices, "gateways": report.gateways, "behind_gateways": report.behind_gateways,
            "new_passwords": report.new_passwords, "rotate": rotate, "skipped": len(report.skipped),
            "directory": str(out_dir)})
        uow.commit()
    # Files only after the passwords are safely stored: if writing fails, provisioning again
    # (without --rotate) writes the same passwords.
    out_dir.mkdir(parents=True, exist_ok=True)
    files = mosquitto.write_broker_files(out_dir, accounts, port=port)
    # The installer's bundle: device and gateway accounts only. The platform's own account can
    # command every device, so its password stays in cityward (encrypted) and is never handed out.
    bundle = {"v": 1, "broker": broker_url,
              "devices": {a.username: {"username": a.username, "password": a.password}
                          for a in accounts if a.role == "device"},
              "gateways": {a.username: {"username": a.username, "password": a.password,
                                        "children": list(a.children)} for a in accounts if a.role == "gateway"}}
    bundle_path = out_dir / "device-credentials.json"
    tmp = bundle_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(bundle, fh)
    os.replace(tmp, bundle_path)
    report.files = {"config": str(files.config), "passwd": str(files.password_file), "acl": str(files.acl_file),
                    "bundle": str(bundle_path)}
    return report


def _topology(s: Session, devices: list[tuple[str, str, int]]) -> dict[str, str | None]:
    """Each non-gateway device → a gateway of its zone or the nearest zone above (round-robin)."""
    parents = zone_tree(s)
    gateways: dict[int, list[str]] = defaultdict(list)
    for d, kind, zone in devices:
        if kind == "gateway":
            gateways[zone].append(d)
    turn: dict[int, int] = defaultdict(int)
    routes: dict[str, str | None] = {}
    for d, kind, zone in devices:
        if kind == "gateway":
            routes[d] = None
            continue
        home = next((z for z in zone_chain(zone, parents) if gateways.get(z)), None)
        if home is None:
            routes[d] = None
            continue
        options = gateways[home]
        routes[d] = options[turn[home] % len(options)]
        turn[home] += 1
    return routes


def platform_password(uow_factory: UnitOfWorkFactory, box: SecretBox) -> str | None:
    """The platform's own broker password (for configuring a broker it connects to)."""
    with uow_factory() as uow:
        blob = uow.session.scalar(select(DeviceSecretRow.ciphertext).where(
            DeviceSecretRow.device_id == PLATFORM_USERNAME, DeviceSecretRow.purpose == MQTT))
    return box.open(PLATFORM_USERNAME, MQTT, blob) if blob is not None else None


def platform_broker_url(uow_factory: UnitOfWorkFactory, box: SecretBox, url: str) -> str:
    """The broker URL with the platform account's stored credentials, when the URL has none."""
    if "@" in url.split("://", 1)[-1]:
        return url
    password = platform_password(uow_factory, box)
    if password is None:
        return url  # an open broker (a development Mosquitto)
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{PLATFORM_USERNAME}:{quote(password, safe='')}@{rest}"
