"""Firmware stays verified to the last byte: a catalog image changed on disk — after `rollout create`,
or while its rollout runs — is never sent to a device; that rollout is aborted and its remaining
devices fail "image changed on disk"; the city is alerted (audit event and its webhook); other
rollouts and the executor carry on. The download server's own checks run on real sockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from cityward.adapters import notify
from cityward.adapters.secretbox import SecretBox
from cityward.adapters.storage.models import NotificationRow, RolloutActionRow
from cityward.bootstrap import Platform
from cityward.domain.firmware import signed_message
from cityward.domain.organizations import Caller
from cityward.domain.rollouts import Operation, WaveOptions
from cityward.services import auditlog, firmware, inventory, notifications, rollouts, zones
from cityward.services.inventory import DeviceFilter
from cityward.services.notifications import AlertChannels
from cityward.services.rollout_executor import Dispatch, Executor, ExecutorOptions, firmware_token
from cityward.services.rollouts import RolloutRequest, Target
from tests.conftest import caller_for
from tests.helpers import csv_bytes, device, import_csv, webhook_server
from tests.rollout_city import LiveCity, live_city
from tests.rollout_support import finish_rollout

HEADER = ["id", "kind", "brand", "model", "firmware_version", "zone", "protocol", "serial", "mac"]
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"integrity test manufacturer key").digest())
CHANGED = "image changed on disk"


# --- a webhook receiver (real socket) for the city's alerts --------------------------------------


@dataclass
class Inbox:
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@contextmanager
def webhook_inbox() -> Iterator[Inbox]:
    inbox = Inbox()
    server = webhook_server(inbox.posts)
    inbox.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    try:
        yield inbox
    finally:
        server.shutdown()
        server.server_close()


def city_webhook(platform: Platform, city: Caller, url: str) -> str:
    """The city's own contact: where its alerts go. Returns the signing secret."""
    box = SecretBox(platform.settings.secret_key_bytes())
    _contact, secret = notifications.set_contact(platform.uow, city, box, city.org_name, webhook_url=url)
    assert secret
    return secret


def alerts_of(inbox: Inbox, secret: str) -> list[dict[str, Any]]:
    out = []
    for headers, body in inbox.posts:
        assert notify.verify(secret, headers[notify.SIGNATURE_HEADER], body), "an unsigned alert"
        out.append(json.loads(body))
    return [p for p in out if p["kind"] == "firmware.image_changed"]


def tamper(path: Path, at: int = -1) -> None:
    """Change one byte of a stored image in place (same size, same inode)."""
    with path.open("r+b") as fh:
        fh.seek(at, os.SEEK_END if at < 0 else os.SEEK_SET)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))


def events(platform: Platform, city: Caller, action: str) -> list[Any]:
    return [e for e in auditlog.list_events(platform.uow, city, limit=10_000) if e.action == action]


# --- an inventory without devices behind it (both backends) --------------------------------------


def _pub(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                          serialization.PublicFormat.Raw)).decode()


def _release(platform: Platform, city: Caller, store: Path, image: bytes, version: str = "2.0.0") -> int:
    if not firmware.list_keys(platform.uow):
        firmware.register_key(platform.uow, city, "Lumo", "lumo-1", _pub(KEY))
    signature = base64.b64encode(KEY.sign(signed_message("Lumo", "L100", version,
                                                         hashlib.sha256(image).hexdigest()))).decode()
    return firmware.add_release(platform.uow, city, store, brand="Lumo", model="L100", version=version, image=image,
                                signature=signature, key_id="lumo-1").id


@pytest.fixture
def fleet(platform: Platform, city: Caller) -> Caller:
    zones.create_zone(platform.uow, city, "north")
    zones.create_zone(platform.uow, city, "south")
    rows = [device(i, zone="north" if i <= 6 else "south", protocol="mqtt") for i in range(1, 13)]
    import_csv(platform, city, csv_bytes(rows, HEADER), create_missing=True)
    return city


def _started(platform: Platform, city: Caller, req: RolloutRequest, store: Path) -> int:
    rid, _summary = rollouts.create(platform.uow, city, req, store)
    rollouts.start(platform.uow, city, rid)
    return rid


def _options(store: Path, **over: Any) -> ExecutorOptions:
    return replace(ExecutorOptions(mqtt_url=None, firmware_store=store, alerts=AlertChannels(allow_private=True)),
                   **over)


def test_an_image_changed_after_create_stops_its_rollout_not_the_others(platform: Platform, fleet: Caller,
                                                                          tmp_path: Path) -> None:
    """Today's failure: the executor raised at the claim (exit 2), the claim stayed held, and every
    later round of every rollout raised again."""
    store = tmp_path / "fw"
    image = b"\x7fELF lumo 2.0.0 " * 5000
    release = _release(platform, fleet, store, image)
    waves = WaveOptions(canary=1, percentages=(50, 100), concurrency=3)
    upgrade = _started(platform, fleet, RolloutRequest("fw", Operation.UPGRADE_FIRMWARE, Target(
        selector=DeviceFilter(zone="north")), waves, release=release), store)
    reboot = _started(platform, fleet, RolloutRequest("reboot", Operation.REBOOT, Target(
        selector=DeviceFilter(zone="south")), waves), store)
    sha = firmware.get_release(platform.uow, release).sha256
    tamper(store / sha)
    with webhook_inbox() as inbox:
        secret = city_webhook(platform, fleet, inbox.url)
        key = platform.settings.secret_key_bytes()
        executor = Executor(platform.uow, SecretBox(key), key, _options(store))
        claimed, busy = executor.claim_all()
        assert {upgrade, reboot} <= busy and len(claimed) == 2  # both canaries claimed in one round
        built = executor.build_many(claimed)  # does not raise
        assert [d.rollout_id for d in built] == [reboot]
        for d in built:
            executor._finish(d, "succeeded", None)
        view = rollouts.get(platform.uow, fleet, upgrade)
        assert view.status == "aborted" and CHANGED in (view.control_reason or ""), view
        actions = rollouts.actions(platform.uow, fleet, upgrade)
        assert len(actions) == 6 and all(a.status == "failed" and (a.detail or "").startswith(CHANGED)
                                         for a in actions), actions
        now = hashlib.sha256((store / sha).read_bytes()).hexdigest()
        assert f"its SHA-256 is now {now}" in (actions[0].detail or "")
        # Nothing stays claimed: no lease to run out and bring the poison back.
        with platform.uow() as uow:
            assert not uow.session.scalars(select(RolloutActionRow).where(
                RolloutActionRow.rollout_id == upgrade, RolloutActionRow.lease_until.is_not(None))).all()
        # The other rollout goes on to its end, with the same executor.
        finish_rollout(platform, reboot, store)
        assert rollouts.get(platform.uow, fleet, reboot).status == "succeeded"
        assert executor.claim_all()[0] == []
        # Audited, and the city told (once, however often it is noticed).
        changed = events(platform, fleet, "firmware.image_changed")
        assert len(changed) == 1 and changed[0].after["rollouts_aborted"] == [upgrade]
        assert changed[0].after["devices_failed"] == 6
        assert any(e.target_id == str(upgrade) and CHANGED in e.after["reason"]
                   for e in events(platform, fleet, "rollout.aborted"))
        sent = asyncio.run(executor.deliver_alerts())
        assert [(s.channel, s.ok) for s in sent] == [("webhook", True)]
        [alert] = alerts_of(inbox, secret)
        assert alert["organization"] == fleet.org_name and alert["sha256"] == sha
        assert alert["rollouts_aborted"] == [upgrade] and alert["reason"].startswith(CHANGED)
        assert events(platform, fleet, "notification.delivered")
        with platform.uow() as uow:
            assert [r.kind for r in uow.session.scalars(select(NotificationRow))] == ["firmware.image_changed"]
    # A new rollout of the changed image is refused at create, saying so.
    with pytest.raises(firmware.ImageChanged, match="no longer verifies: image changed on disk"):
        rollouts.create(platform.uow, fleet, RolloutRequest("again", Operation.UPGRADE_FIRMWARE, Target(
            selector=DeviceFilter(zone="north")), waves, release=release), store)


def test_one_claim_that_cannot_be_built_does_not_hold_up_the_others(platform: Platform, fleet: Caller,
                                                                     tmp_path: Path) -> None:
    store = tmp_path / "fw"
    waves = WaveOptions(canary=0, percentages=(100,), concurrency=6)
    broken = _started(platform, fleet, RolloutRequest("q", Operation.QUARANTINE, Target(
        selector=DeviceFilter(zone="north")), waves, reason="test"), store)
    fine = _started(platform, fleet, RolloutRequest("r", Operation.REBOOT, Target(
        selector=DeviceFilter(zone="south")), waves), store)
    key = platform.settings.secret_key_bytes()

    class Buggy(Executor):
        def _params(self, s: Any, op: Operation, stored: dict[str, Any], secret: str | None) -> dict[str, Any]:
            if op is Operation.QUARANTINE:
                raise RuntimeError("a bug building this rollout's command")
            return super()._params(s, op, stored, secret)

    executor = Buggy(platform.uow, SecretBox(key), key, _options(store))
    claimed, busy = executor.claim_all()
    assert {broken, fine} <= busy and len(claimed) == 12
    built = executor.build_many(claimed)
    assert {d.rollout_id for d in built} == {fine} and len(built) == 6
    # The broken one's claims stay under their lease (a bug, not a verdict about the devices).
    assert {a.status for a in rollouts.actions(platform.uow, fleet, broken)} == {"running"}


# --- the download server, on real sockets ---------------------------------------------------------


@contextmanager
def serving(platform: Platform, store: Path) -> Iterator[Executor]:
    """An executor's session (its download server) on its own event loop in a thread."""
    key = platform.settings.secret_key_bytes()
    executor = Executor(platform.uow, SecretBox(key), key, _options(store))
    loop = asyncio.new_event_loop()
    started, stop = threading.Event(), asyncio.Event()

    async def main() -> None:
        async with executor.session():
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(20)
    try:
        yield executor
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def _url(executor: Executor, sha: str) -> str:
    return f"{executor.base_url}/firmware/{firmware_token(executor.key, sha)}/{sha}"


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_the_download_server_refuses_or_cuts_off_an_image_that_changed(platform: Platform, fleet: Caller,
                                                                       tmp_path: Path) -> None:
    store = tmp_path / "fw"
    big = hashlib.sha256(b"seed").digest() * (1 << 20)  # 32 MiB: more than the sockets between us buffer
    release = _release(platform, fleet, store, big)
    sha = firmware.get_release(platform.uow, release).sha256
    small = b"small image " * 1000
    other = firmware.get_release(platform.uow, _release(platform, fleet, store, small, "2.0.1")).sha256
    rid = _started(platform, fleet, RolloutRequest("fw", Operation.UPGRADE_FIRMWARE, Target(
        selector=DeviceFilter(zone="north")), WaveOptions(canary=0, percentages=(100,)), release=release), store)
    with serving(platform, store) as executor, httpx.Client(timeout=30) as http:
        assert http.get(f"{executor.base_url}/firmware/{'0' * 32}/{sha}").status_code == 404  # no token, no image
        intact = http.get(_url(executor, other))
        assert intact.status_code == 200 and intact.content == small
        # Changed while it is sent: the transfer stops short of its end, the last bytes never leave.
        received = 0
        with pytest.raises(httpx.RemoteProtocolError), http.stream("GET", _url(executor, sha)) as response:
            assert response.status_code == 200 and response.headers["content-length"] == str(len(big))
            for chunk in response.iter_bytes():
                if received == 0:
                    tamper(store / sha)  # its very last byte
                received += len(chunk)
        assert 0 < received < len(big)
        # Changed before it is asked for: refused, nothing of it sent.
        refused = http.get(_url(executor, sha))
        assert refused.status_code == 409 and CHANGED in refused.text and len(refused.content) < 100
        assert http.get(_url(executor, other)).content == small  # other images are served on
        assert executor.downloads is not None
        counters = executor.downloads.counters
        assert (counters.cut, counters.refused) == (1, 1) and counters.served >= 1
        # The rollout offering it is stopped; the executor is still up.
        for _ in range(100):
            if rollouts.get(platform.uow, fleet, rid).status == "aborted":
                break
            threading.Event().wait(0.05)
        view = rollouts.get(platform.uow, fleet, rid)
        assert view.status == "aborted" and CHANGED in (view.control_reason or "")
        assert all(a.status == "failed" for a in rollouts.actions(platform.uow, fleet, rid))
    assert len(events(platform, fleet, "firmware.image_changed")) == 1


def test_a_stream_is_hashed_as_it_goes_and_its_end_held_back(tmp_path: Path) -> None:
    from cityward.services.firmware_downloads import ImageMismatch, verified_chunks

    path = tmp_path / "image"
    data = b"0123456789" * 10
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()

    async def read_all(change_after: int | None) -> bytes:
        got = b""
        with path.open("rb") as fh:
            async for chunk in verified_chunks(fh.fileno(), sha, len(data), chunk=16):
                got += chunk
                if change_after is not None and len(got) >= change_after:
                    tamper(path)
                    change_after = None
        return got

    assert asyncio.run(read_all(None)) == data
    got: list[bytes] = []

    async def cut() -> None:
        got.append(b"")
        with path.open("rb") as fh:
            async for chunk in verified_chunks(fh.fileno(), sha, len(data), chunk=16):
                got[0] += chunk
                if len(got[0]) == 16:
                    tamper(path)

    with pytest.raises(ImageMismatch, match="image changed on disk: its SHA-256 is now"):
        asyncio.run(cut())
    assert len(got[0]) < len(data)  # never the whole of it
    path.write_bytes(data[:50])  # truncated: a short read is a change too
    with pytest.raises(ImageMismatch, match="cut to 50 bytes"):
        asyncio.run(read_all(None))

# --- on the simulated city: both moments, with a healthy rollout going on meanwhile -------------


def _products(live: LiveCity) -> list[tuple[tuple[str, str], list[str]]]:
    """Products with at least three healthy MQTT devices (their true maker's brand and model)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in live.rows:
        if r["protocol"] != "mqtt" or live.sim.device(r["id"])["fault"] not in ("none", None):
            continue
        view = inventory.get_device(live.platform.uow, live.city, r["id"])
        groups.setdefault((view.manufacturer, view.origin_model), []).append(r["id"])
    return sorted(((p, ids[:5]) for p, ids in groups.items() if len(ids) >= 3), key=lambda g: -len(g[1]))


def _go(live: LiveCity, name: str, targets: list[str], release: int) -> int:
    req = RolloutRequest(name, Operation.UPGRADE_FIRMWARE, Target(device_ids=tuple(targets)),
                         WaveOptions(canary=1, percentages=(50, 100), concurrency=2, timeout_s=10),
                         release=release)
    rid, summary = rollouts.create(live.platform.uow, live.city, req, live.store)
    if summary.needs_approval:
        rollouts.approve(live.platform.uow, caller_for(live.platform, live.city.org_name), rid)
    rollouts.start(live.platform.uow, live.city, rid)
    return rid


class Live(Executor):
    """The real executor; `after_build` lets a test act between building commands and sending them."""

    after_build: Any = None

    def build_many(self, claims: list[tuple[int, str]]) -> list[Dispatch]:
        built = super().build_many(claims)
        if self.after_build is not None:
            self.after_build(built)
        return built


def _executor(live: LiveCity) -> Live:
    return Live(live.platform.uow, live.box, live.platform.settings.secret_key_bytes(),
                ExecutorOptions(mqtt_url=live.mqtt_url, firmware_store=live.store, tick=0.2, name="integrity",
                                alerts=AlertChannels(allow_private=True)))


def _run(executor: Executor, *ids: int, limit: float = 60) -> None:
    async def main() -> None:
        await asyncio.wait_for(executor.run(asyncio.Event(), until_done=set(ids)), limit)
    asyncio.run(main())


def _upgraded(live: LiveCity, devices: list[str], version: str) -> set[str]:
    return {d for d in devices if live.sim.device(d)["firmware_version"] == version}


@pytest.mark.parametrize("platform", ["postgresql"], indirect=True)
def test_a_changed_image_on_the_simulated_city(platform: Platform, city: Caller, tmp_path: Path) -> None:
    with live_city(platform, city, tmp_path) as live, webhook_inbox() as inbox:
        secret = city_webhook(platform, city, inbox.url)
        (p1, first), (p2, second) = _products(live)[:2]

        # 1. Changed after `rollout create`: that rollout fails without a device being sent
        # anything; a healthy firmware rollout of another product runs to its end meanwhile.
        bad = live.release(p1[0], p1[1], "77.1.0", b"\x7fELF image one " * 4000)
        good = live.release(p2[0], p2[1], "77.2.0", b"\x7fELF image two " * 4000)
        stopped, healthy = _go(live, "changed", first, bad.id), _go(live, "healthy", second, good.id)
        tamper(live.store / bad.sha256, 1000)
        _run(_executor(live), stopped, healthy)  # returns: the executor neither raised nor stalled
        view = rollouts.get(platform.uow, city, stopped)
        assert view.status == "aborted" and (view.control_reason or "").startswith(CHANGED), view
        assert {(a.status, (a.detail or "")[:len(CHANGED)]) for a in rollouts.actions(platform.uow, city, stopped)} \
            == {("failed", CHANGED)}
        assert not _upgraded(live, first, "77.1.0") and all(not live.sim.device(d)["applied"] for d in first)
        assert rollouts.get(platform.uow, city, healthy).status == "succeeded"
        assert _upgraded(live, second, "77.2.0") == set(second)

        # 2. Changed during a rollout, between the command being built and the device fetching
        # the image: the download is refused, the device installs nothing, the rollout stops; the
        # devices already upgraded keep their verified image. A healthy rollout runs meanwhile.
        fresh = live.release(p1[0], p1[1], "77.3.0", b"\x7fELF image three " * 4000)
        other = live.release(p2[0], p2[1], "77.4.0", b"\x7fELF image four " * 4000)
        during, meanwhile = _go(live, "changed during", first, fresh.id), _go(live, "meanwhile", second, other.id)
        executor = _executor(live)
        done: list[str] = []

        def after_build(built: list[Dispatch]) -> None:
            ours = [d for d in built if d.rollout_id == during]
            if ours and not done and rollouts.get(platform.uow, city, during).counts.get("succeeded", 0) >= 1:
                tamper(live.store / fresh.sha256, 5)
                done.append(ours[0].device_id)

        executor.after_build = after_build
        _run(executor, during, meanwhile)
        assert done, "the canary never succeeded: the image was not changed during the rollout"
        view = rollouts.get(platform.uow, city, during)
        assert view.status == "aborted" and (view.control_reason or "").startswith(CHANGED), view
        actions = {a.device_id: a for a in rollouts.actions(platform.uow, city, during)}
        ok = {d for d, a in actions.items() if a.status == "succeeded"}
        assert ok and ok == _upgraded(live, first, "77.3.0")
        assert all(a.status == "failed" and (a.detail or "").startswith(CHANGED)
                   for d, a in actions.items() if d not in ok), actions
        assert "the device says: download failed" in (actions[done[0]].detail or "")  # it was refused the bytes
        assert all("hash mismatch" not in (a.detail or "") for a in actions.values())  # never got them whole
        assert executor.downloads is not None and executor.downloads.counters.refused >= 1
        assert rollouts.get(platform.uow, city, meanwhile).status == "succeeded"
        assert _upgraded(live, second, "77.4.0") == set(second)
        for d in first + second:
            assert all(n == 1 for n in live.sim.device(d)["applied"].values()), d

        # The city heard of both, through its webhook and in the audit log.
        alerts = alerts_of(inbox, secret)
        assert [(a["sha256"], a["rollouts_aborted"]) for a in alerts] == [
            (bad.sha256, [stopped]), (fresh.sha256, [during])], alerts
        assert {e.target_id for e in events(platform, city, "firmware.image_changed")} == {str(bad.id), str(fresh.id)}
