"""End to end over HTTP (protocol §3): each device on its own loopback address, real sockets."""

from __future__ import annotations

import csv
import stat
import time
from pathlib import Path

import httpx

from cityward.sim.keys import sign_firmware
from tests.sim.helpers import command, device_of, rows, simulator, unique_prefix

SEED = 41


def test_http_devices_auth_lockout_commands_and_firmware_push(tmp_path: Path) -> None:
    prefix = unique_prefix()
    city = [r for r in rows(60, SEED, prefix) if r["protocol"] == "http"]
    healthy = [r for r in city if device_of(r, SEED, prefix).fault is None]
    main, victim = healthy[0], healthy[1]
    handover = tmp_path / "handover.csv"
    with simulator("--devices", "60", "--seed", str(SEED), "--id-prefix", prefix, "--only",
                   f"{main['id']},{victim['id']}", "--handover", str(handover), "--time-scale", "0.01") as sim:
        assert sim.ready["http"] == "2" and sim.ready["mqtt"] == "0"
        assert stat.S_IMODE(handover.stat().st_mode) == 0o600
        with handover.open(newline="") as f:
            passwords = {r["device_id"]: r["password"] for r in csv.DictReader(f)}
        assert set(passwords) == {main["id"], victim["id"]}

        address = sim.device(main["id"])["address"]
        assert address.startswith("127.") and address == main["address"]  # unless the fallback had to be used
        base = f"http://{address}/cityward/v1"
        auth = ("admin", passwords[main["id"]])
        with httpx.Client(timeout=10) as client:
            info = client.get(f"{base}/info", auth=auth)
            assert info.status_code == 200
            assert {k: info.json()[k] for k in ("device_id", "serial", "mac")} == {
                "device_id": main["id"], "serial": main["serial"], "mac": main["mac"]}
            assert info.json()["address"] == address
            first, second = client.get(f"{base}/state", auth=auth).json(), client.get(f"{base}/state", auth=auth).json()
            assert second["seq"] == first["seq"] + 1 and first["boot_id"] == second["boot_id"]
            assert client.get(f"{base}/config", auth=auth).json()["config_hash"] == first["config_hash"]
            assert client.get(f"{base}/certificates", auth=auth).json()["v"] == 1
            assert client.get(f"{base}/info").json()["device_id"] == main["id"]  # identity is public
            assert client.get(f"{base}/state").status_code == 401
            assert client.get(f"{base}/state", auth=("root", auth[1])).status_code == 401

            # errors: malformed, oversized, unknown command id
            assert client.post(f"{base}/commands", auth=auth, content=b"{nope").status_code == 400
            big = client.post(f"{base}/commands", auth=auth, content=b" " * (65 * 1024))
            assert big.status_code == 413 and big.json()["v"] == 1
            assert client.get(f"{base}/commands/never-seen", auth=auth).status_code == 404

            # a command, then its retry: 202 first, 200 with the stored result and repeat: true
            cmd = command("quarantine", {"reason": "test"})
            posted = client.post(f"{base}/commands", auth=auth, json=cmd)
            assert posted.status_code == 202 and posted.json()["status"] == "accepted"
            deadline = time.monotonic() + 10
            while client.get(f"{base}/commands/{cmd['command_id']}", auth=auth).json()["status"] != "succeeded":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            again = client.post(f"{base}/commands", auth=auth, json=cmd)
            assert again.status_code == 200 and again.json()["repeat"] is True
            assert again.json()["status"] == "succeeded"
            assert client.get(f"{base}/state", auth=auth).json()["quarantined"] is True
            view = sim.device(main["id"])
            assert view["applied_commands"] == 1 and view["applied"] == {cmd["command_id"]: 1}

            # firmware pushed over HTTP: a tampered image is refused and nothing is installed
            image = b"camera firmware " * 1000
            maker = device_of(main, SEED, prefix).maker
            digest, signature, kid = sign_firmware(*maker, "V9.9.9 build 1", image, SEED)
            params = {"url": "push", "version": "V9.9.9 build 1", "size": len(image), "sha256": digest,
                      "signature": signature, "key_id": kid}
            bad = command("upgrade_firmware", params)
            assert client.post(f"{base}/commands", auth=auth, json=bad).status_code == 202
            assert client.put(f"{base}/firmware/{bad['command_id']}", auth=auth,
                              content=image + b"more").status_code == 413
            refused = client.put(f"{base}/firmware/{bad['command_id']}", auth=auth, content=image[:-1] + b"!")
            assert refused.json()["status"] == "rejected" and refused.json()["detail"] == "hash mismatch"
            assert sim.device(main["id"])["firmware_version"] == main["firmware_version"]

            good = command("upgrade_firmware", params)
            assert client.post(f"{base}/commands", auth=auth, json=good).status_code == 202
            pushed = client.put(f"{base}/firmware/{good['command_id']}", auth=auth, content=image)
            assert pushed.json()["status"] == "in_progress"
            deadline = time.monotonic() + 15
            while (latest := client.get(f"{base}/commands/{good['command_id']}", auth=auth).json())["status"] \
                    == "in_progress":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert latest["status"] == "succeeded", latest
            assert client.get(f"{base}/state", auth=auth).json()["firmware_version"] == "V9.9.9 build 1"

            # five failures in a minute lock the API, even for the right password
            other = f"http://{sim.device(victim['id'])['address']}/cityward/v1"
            codes = [client.get(f"{other}/state", auth=("admin", "wrong")).status_code for _ in range(5)]
            assert codes == [401] * 5
            locked = client.get(f"{other}/state", auth=("admin", passwords[victim["id"]]))
            assert locked.status_code == 429 and locked.json()["error"]
            assert client.get(f"{base}/state", auth=auth).status_code == 200  # the other device is not locked
