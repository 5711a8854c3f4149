"""Device credentials: the installer's handover of HTTP admin passwords, stored encrypted.

A password is never printed, logged or audited; the audit log records which devices got one.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from datetime import datetime
from typing import IO

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import DeviceRow, DeviceSecretRow
from cityward.adapters.storage.scoping import scope_clause
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain.access import Action, require, require_device_write
from cityward.domain.limits import API_JSON, csv_problem, load_json, text_lines
from cityward.domain.organizations import Caller, Role
from cityward.domain.telemetry import DEVICE_ID_PATTERN
from cityward.errors import InvalidInput, NotFound, PermissionDenied, Problem
from cityward.services import inventory

ADMIN = "admin"  # HTTP admin password
MQTT = "mqtt"  # broker account password
MAX_HANDOVER_BYTES = 64 << 20
_ID = re.compile(DEVICE_ID_PATTERN)


def parse_handover(stream: IO[bytes], source: str) -> dict[str, str]:
    """`device_id,password` CSV with a header, or a JSON object {device_id: password}."""
    raw = stream.read(MAX_HANDOVER_BYTES + 1)
    if len(raw) > MAX_HANDOVER_BYTES:
        raise InvalidInput(f"{source}: larger than {MAX_HANDOVER_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source}: not UTF-8 (byte {exc.start})") from None
    problems: list[Problem] = []
    pairs: dict[str, str] = {}
    if text.lstrip().startswith("{"):
        data = load_json(text, API_JSON, source)  # {id: password}: one level; limits in domain/limits.py
        if not isinstance(data, dict):
            raise InvalidInput(f"{source}: expected a JSON object {{device_id: password}}")
        items: Iterable[tuple[int, object, object]] = ((i + 1, k, v) for i, (k, v) in enumerate(data.items()))
    else:
        reader = csv.reader(text_lines(text, source))
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise csv_problem(exc, source, 1) from None
        if header is None or [h.strip().lower() for h in header[:2]] != ["device_id", "password"]:
            raise InvalidInput(f"{source}: the first line must be the header device_id,password")
        try:
            items = [(n + 2, row[0], row[1] if len(row) > 1 else "") for n, row in enumerate(reader) if row]
        except csv.Error as exc:
            raise csv_problem(exc, source, reader.line_num) from None
    for row, device_id, password in items:
        if not isinstance(device_id, str) or not _ID.match(device_id):
            problems.append(Problem("not a device id", row=row, field="device_id", source=source))
        elif not isinstance(password, str) or not 1 <= len(password) <= 256 or not password.isprintable():
            problems.append(Problem("password must be 1-256 printable characters", row=row, field="password",
                                    source=source))
        elif device_id in pairs:
            problems.append(Problem(f"{device_id} appears twice", row=row, field="device_id", source=source))
        else:
            pairs[device_id] = password
    if problems:
        raise InvalidInput(f"{source}: {len(problems)} bad rows; nothing was stored", problems[:50],
                           more=max(0, len(problems) - 50))
    return pairs


def import_handover(uow_factory: UnitOfWorkFactory, caller: Caller, box: SecretBox, stream: IO[bytes],
                    source: str) -> int:
    """Store every password of the file, or none (a device outside the caller's scope or unknown
    refuses the whole file)."""
    scope = require_device_write(caller, Action.HAND_OVER)
    pairs = parse_handover(stream, source)
    with uow_factory(write=True) as uow:
        ids = sorted(pairs)
        visible: set[str] = set()
        for i in range(0, len(ids), 900):
            visible.update(uow.session.scalars(select(DeviceRow.id).where(
                DeviceRow.id.in_(ids[i:i + 900]), scope_clause(uow.session, scope))))
        missing = [d for d in ids if d not in visible]
        if missing:
            raise InvalidInput(f"{source}: {len(missing)} devices are not in the inventory you manage; nothing "
                               "was stored", [Problem("unknown device or not yours", field="device_id", source=d)
                                              for d in missing[:50]], more=max(0, len(missing) - 50))
        store_secrets(uow.session, box, ADMIN, pairs, uow.clock())
        uow.record(caller, "credentials.imported", "credentials", source,
                   after={"purpose": ADMIN, "devices": len(pairs), "first": ids[:20]})
        uow.commit()
    return len(pairs)


def store_secrets(session: Session, box: SecretBox, purpose: str, secrets: dict[str, str], now: datetime) -> None:
    ids = sorted(secrets)
    for i in range(0, len(ids), 900):
        session.execute(delete(DeviceSecretRow).where(DeviceSecretRow.purpose == purpose,
                                                      DeviceSecretRow.device_id.in_(ids[i:i + 900])))
    if ids:
        session.execute(insert(DeviceSecretRow), [
            {"device_id": d, "purpose": purpose, "ciphertext": box.seal(d, purpose, secrets[d]), "updated_at": now}
            for d in ids])


def load_secrets(uow_factory: UnitOfWorkFactory, box: SecretBox, purpose: str,
                 device_ids: Iterable[str] | None = None) -> dict[str, str]:
    """Decrypted secrets for the platform's own use (polling, provisioning); never for display."""
    with uow_factory() as uow:
        q = select(DeviceSecretRow.device_id, DeviceSecretRow.ciphertext).where(DeviceSecretRow.purpose == purpose)
        if device_ids is not None:
            q = q.where(DeviceSecretRow.device_id.in_(sorted(device_ids)))
        return {d: box.open(d, purpose, blob) for d, blob in uow.session.execute(q)}


def reveal(uow_factory: UnitOfWorkFactory, box: SecretBox, caller: Caller, device_id: str) -> str:
    """A device's current admin password, for a person who must log in by hand: a city
    administrator, or an administrator of the organization holding the device's credentials duty.
    Every reveal is in the audit log (the secret never is)."""
    require(caller, Action.REVEAL)
    view = inventory.get_device(uow_factory, caller, device_id)  # NotFound outside the caller's scope
    holder = view.responsible.get("credentials")
    if not (caller.is_city_admin or (caller.role is Role.ADMIN and holder == caller.org_name)):
        raise PermissionDenied(f"only a city administrator, or an administrator of {holder or 'the organization'} "
                               f"holding the credentials duty for {device_id}, may reveal its password")
    found = load_secrets(uow_factory, box, ADMIN, [view.id])
    if view.id not in found:
        raise NotFound(f"no admin password is on record for {device_id}",
                       hint="rotate it with a rollout (cityward rollout create -o rotate_password) "
                       "or import the installer's handover")
    with uow_factory(write=True) as uow:
        uow.record(caller, "credentials.revealed", "device", view.id, after={"purpose": ADMIN})
        uow.commit()
    return found[view.id]
