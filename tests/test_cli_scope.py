"""README's "Who sees what" through the real `cityward` command with CITYWARD_TOKEN (a subprocess,
as a partner runs it): a few representative commands per rule, refused with exit 1 (2 for a device
outside the caller's scope, which does not exist for it) and nothing changed, or allowed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cityward.adapters.storage.models import AuditEventRow, AuditRunRow, WaiverRow
from cityward.bootstrap import Platform, bootstrap
from cityward.config import load_settings
from cityward.services import organizations, setup, tokens, zones
from tests.helpers import import_csv
from tests.test_cli import Cli

HEADER = "id,kind,brand,model,firmware_version,zone,protocol,address,installer,maintainer,supplier"


@dataclass
class Town:
    cli: Cli
    platform: Platform
    token: dict[str, str]  # "kind role" → secret

    def events(self) -> int:
        with self.platform.uow() as uow:
            return uow.session.scalar(select(func.count()).select_from(AuditEventRow)) or 0

    def count(self, row: type) -> int:
        with self.platform.uow() as uow:
            return uow.session.scalar(select(func.count()).select_from(row)) or 0


@pytest.fixture
def town(tmp_path: Path) -> Iterator[Town]:
    cli = Cli(tmp_path)
    platform = bootstrap(load_settings(database_url=f"sqlite:///{tmp_path / 'cityward.db'}",
                                       secret_key_file=tmp_path / "cityward.secret"))
    setup.initialize(platform.uow, "Springfield", "local:test", admin_user=None)  # as `cityward init` does
    city = organizations.local_operator(platform.uow, "test")
    for name, kind in (("Alpha", "integrator"), ("Beta", "integrator"), ("Dist", "distributor"),
                       ("Cons", "consultant"), ("Keys", "installer")):
        organizations.create_org(platform.uow, city, name, kind)
    zones.create_zone(platform.uow, city, "Downtown")
    import_csv(platform, city, "\n".join([
        HEADER, "d1,streetlight,Acme,AL-100,1.0.0,Downtown,mqtt,,,Alpha,Dist",
        "b1,streetlight,Acme,AL-100,1.0.0,Downtown,mqtt,,,Beta,",
        "k1,camera,Vista,VC-9,2.0,Downtown,http,127.0.0.1:9,Keys,,"]).encode() + b"\n")
    secrets = {f"{org} {role}": tokens.create_token(platform.uow, city, org, f"{org} {role}", role).secret
               for org in ("Springfield", "Alpha", "Dist", "Cons", "Keys") for role in ("operator", "viewer")}
    yield Town(cli, platform, secrets)
    platform.close()


def refused(town: Town, who: str, *args: str, code: int = 1, says: str = "") -> None:
    before = town.events()
    proc = town.cli(*args, code=code, token=town.token[who])
    assert says in proc.stderr, proc.stderr
    assert town.events() == before, f"{who}: `{' '.join(args)}` was refused but the audit log moved"


def test_partner_tokens_keep_to_the_table_on_the_command_line(town: Town) -> None:
    # A viewer never changes state: running an audit stores a run.
    refused(town, "Alpha viewer", "audit", "run", says="may not run an audit")
    assert town.count(AuditRunRow) == 0
    town.cli("audit", "run", token=town.token["Alpha operator"])
    assert town.count(AuditRunRow) == 1

    # Waivers: a partner asks only for one device it holds a duty for; the city approves.
    expires = ("--reason", "replaced next month", "--expires", "30d")
    refused(town, "Alpha operator", "waivers", "request", "SEEN-002", "--device", "b1", *expires, code=2,
            says="not found")  # Beta's device does not exist for Alpha
    refused(town, "Alpha operator", "waivers", "request", "SEEN-002", "--zone", "Downtown", *expires,
            says="one device")
    town.cli("waivers", "request", "SEEN-002", "--device", "d1", *expires, token=town.token["Alpha operator"])
    assert town.count(WaiverRow) == 1

    # A distributor declares supplies and nothing else: no rollouts on the devices it supplied.
    refused(town, "Dist operator", "rollout", "create", "-o", "reboot", "--devices", "d1",
            says="may not plan or create a rollout")
    # A consultant reads and never writes devices; only the city sees discovered devices.
    (town.cli.home / "one.csv").write_text(f"{HEADER}\nd1,streetlight,Acme,AL-100,9.9.9,Downtown,mqtt,,,Alpha,Dist\n")
    refused(town, "Cons operator", "devices", "import", "one.csv", says="may not import or save devices")
    refused(town, "Alpha operator", "discover", "pending", says="may not see discovered devices")
    # Commands follow the duty: Keys installed k1 but does not maintain it, so it may not reboot it.
    refused(town, "Keys operator", "devices", "command", "k1", "reboot", "--timeout", "1",
            says="does not hold the maintain duty")
    # Server processes act for the platform, never for a partner's token.
    refused(town, "Alpha operator", "connect", "--no-mqtt", "--duration", "0", says="city administrator")
