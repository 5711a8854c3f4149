"""`cityward rollout` control commands in a subprocess: a finished rollout refuses them with exit 1
and says which state it is in."""

from __future__ import annotations

import json
from pathlib import Path

from cityward.bootstrap import bootstrap
from cityward.config import load_settings
from cityward.domain.rollouts import Operation, WaveOptions
from cityward.services import organizations, rollouts, zones
from cityward.services.rollouts import RolloutRequest, Target
from tests.helpers import HEADER, csv_bytes, device, import_csv
from tests.rollout_support import finish_rollout
from tests.test_cli import Cli


def test_control_commands_on_a_succeeded_rollout_exit_1_naming_the_state(tmp_path: Path) -> None:
    run = Cli(tmp_path)
    run("init", "--city", "Springfield")
    plat = bootstrap(load_settings(database_url=run.env["CITYWARD_DATABASE_URL"],
                                   secret_key_file=tmp_path / "cityward.secret"))
    try:
        city = organizations.local_operator(plat.uow, "test")
        zones.create_zone(plat.uow, city, "north")
        import_csv(plat, city, csv_bytes([device(i, zone="north", protocol="mqtt") for i in (1, 2)],
                                         [*HEADER, "protocol"]))
        rid, _ = rollouts.create(plat.uow, city, RolloutRequest(
            "reboot", Operation.REBOOT, Target(device_ids=("SL-00001", "SL-00002")),
            WaveOptions(canary=1, percentages=(100,))), tmp_path)
        rollouts.start(plat.uow, city, rid)
        finish_rollout(plat, rid, tmp_path)
    finally:
        plat.close()
    for verb in ("abort", "pause"):
        proc = run("rollout", verb, str(rid), code=1)
        assert f"rollout {rid} is succeeded: it cannot be" in proc.stderr, proc.stderr
    status = json.loads(run("rollout", "status", str(rid), "--json").stdout)["rollout"]
    assert status["status"] == "succeeded" and status["counts"] == {"succeeded": 2}
