"""A small live city for rollout tests: the platform with its inventory, a private Mosquitto with
the provisioned accounts, the simulator as a separate process, the installer's handover imported,
and the helpers to register a manufacturer's key and sign firmware the way it would."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from cityward.adapters.inventory_files import FileFormat
from cityward.adapters.mosquitto import BrokerAccount
from cityward.adapters.secretbox import SecretBox
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.entrypoints.cli.demo import install_city
from cityward.services import broker, credentials, firmware, inventory
from cityward.services.firmware import ReleaseView
from cityward.services.rollout_executor import Executor, ExecutorOptions
from cityward.sim.city import COLUMNS, generate_city, iter_device_rows
from cityward.sim.keys import key_id, public_key, sign_firmware
from tests.brokers import BrokerInfo, private_mosquitto
from tests.sim.helpers import RunningSim, simulator, unique_prefix


@dataclass
class LiveCity:
    platform: Platform
    city: Caller
    sim: RunningSim
    box: SecretBox
    mqtt_url: str
    rows: list[dict[str, str]]
    seed: int
    store: Path
    broker: BrokerInfo | None = None  # the private Mosquitto (tests that kill and restart it)

    def executor(self, name: str = "test") -> Executor:
        return Executor(self.platform.uow, self.box, self.platform.settings.secret_key_bytes(),
                        ExecutorOptions(mqtt_url=self.mqtt_url, firmware_store=self.store, tick=0.2, name=name))

    def release(self, manufacturer: str, model: str, version: str, image: bytes) -> ReleaseView:
        """Play the manufacturer: register its key (once) and add a signed image."""
        kid = key_id(manufacturer, self.seed)
        if kid not in {k.key_id for k in firmware.list_keys(self.platform.uow)}:
            raw = public_key(manufacturer, self.seed).public_bytes(serialization.Encoding.Raw,
                                                                   serialization.PublicFormat.Raw)
            firmware.register_key(self.platform.uow, self.city, manufacturer, kid, base64.b64encode(raw).decode())
        _sha, signature, _kid = sign_firmware(manufacturer, model, version, image, self.seed)
        return firmware.add_release(self.platform.uow, self.city, self.store, brand=manufacturer, model=model,
                                    version=version, image=image, signature=signature, key_id=kid)


def import_rows(platform: Platform, city: Caller, rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    inventory.import_devices(platform.uow, city, io.BytesIO(buf.getvalue().encode()), "inv.csv", FileFormat.CSV)


def provision_accounts(platform: Platform, city: Caller, box: SecretBox,
                       out: Path) -> tuple[str, dict[str, Any], list[BrokerAccount]]:
    """Broker accounts as `cityward mqtt provision` makes them: (bundle file, bundle, accounts
    for a private Mosquitto, the platform's own included)."""
    report = broker.provision(platform.uow, city, box, out, broker_url="mqtt://127.0.0.1:1")
    bundle = json.loads(Path(report.files["bundle"]).read_text())
    platform_pw = broker.platform_password(platform.uow, box)
    assert platform_pw is not None
    accounts = [BrokerAccount("cityward-platform", platform_pw, "platform")]
    accounts += [BrokerAccount(d, v["password"], "device") for d, v in bundle["devices"].items()]
    return report.files["bundle"], bundle, accounts


@contextmanager
def live_city(platform: Platform, city: Caller, tmp_path: Path, *, devices: int = 60, seed: int = 11,
              extra: tuple[str, ...] = ()) -> Iterator[LiveCity]:
    prefix = unique_prefix()
    demo = generate_city(devices, seed)
    install_city(platform, city, demo)
    rows = list(iter_device_rows(demo, seed, id_prefix=prefix))
    import_rows(platform, city, rows)
    box = SecretBox(platform.settings.secret_key_bytes())
    bundle_file, _bundle, accounts = provision_accounts(platform, city, box, tmp_path / "prov")
    handover = tmp_path / "handover.csv"
    with private_mosquitto(tmp_path, accounts) as b, simulator(
            "--devices", str(devices), "--seed", str(seed), "--id-prefix", prefix, "--mqtt-url", b.url,
            "--credentials", bundle_file, "--handover", str(handover), "--state-interval", "2",
            "--time-scale", "0.02", *extra) as sim:
        with handover.open("rb") as fh:
            credentials.import_handover(platform.uow, city, box, fh, "handover.csv")
        yield LiveCity(platform, city, sim, box, b.url, rows, seed, tmp_path / "firmware", broker=b)
