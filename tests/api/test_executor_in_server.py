"""Rollouts run where they are started: a server made with an executor carries out what is started
through it, stops it with itself, and without one the rollout page says what to run."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

import httpx
from api_support import Api, Browser, serve, small_rollout
from sqlalchemy import update

from cityward.adapters.storage.models import ExecutorHeartbeatRow
from cityward.entrypoints.api.app import create_app
from cityward.entrypoints.background import executor_options
from cityward.services import executors, rollouts, tokens, users


def test_a_rollout_started_through_the_server_is_carried_out_by_it(api: Api) -> None:
    rid = small_rollout(api, 2)
    # No broker: the executor's commands to these MQTT devices fail at once, which is enough to
    # see that this server, and nothing else, carried the rollout out.
    app = create_app(api.platform, executor=executor_options(api.platform.settings, mqtt_url=None))
    admin = tokens.create_token(api.platform.uow, api.city, "Springfield", "starter", "admin").secret
    with serve(app) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as client:
        assert app.state.executor.alive
        assert client.post(f"/api/v1/rollouts/{rid}/start").status_code == 200
        deadline = time.monotonic() + 60
        while (shown := rollouts.get(api.platform.uow, api.city, rid)).counts.get("pending") == shown.total:
            assert time.monotonic() < deadline, f"nothing carried out rollout {rid}: {shown}"
            time.sleep(0.2)
        while not (acted := rollouts.actions(api.platform.uow, api.city, rid, status="failed")):
            assert time.monotonic() < deadline, f"no result recorded for rollout {rid}"
            time.sleep(0.2)
        assert "no MQTT broker configured for this executor" in (acted[0].detail or "")
        assert executors.waiting(api.platform.uow) is None  # its heartbeat
    assert not app.state.executor.alive  # stopped with the server


def test_without_an_executor_the_rollout_page_says_what_to_run(api: Api, browser: Browser) -> None:
    rid = small_rollout(api, 3)
    password = secrets.token_urlsafe(16)
    users.create_user(api.platform.uow, api.city, "ops", "Springfield", "operator", password=password)
    browser.sign_in("ops", password)
    assert "Waiting for an executor" not in browser.get(f"/rollouts/{rid}").text  # not started: nothing to wait for
    rollouts.start(api.platform.uow, api.city, rid)
    page = browser.get(f"/rollouts/{rid}").text
    assert "Waiting for an executor" in page and "no executor has looked for work yet" in page
    assert "<code>cityward rollout run</code>" in page and "--no-executor" in page
    executors.beat(api.platform.uow, "worker-on-another-host")
    assert "Waiting for an executor" not in browser.get(f"/rollouts/{rid}/progress").text
    with api.platform.uow(write=True) as uow:
        uow.session.execute(update(ExecutorHeartbeatRow).values(seen_at=uow.clock() - timedelta(seconds=31)))
        uow.commit()
    progress = browser.get(f"/rollouts/{rid}/progress").text  # what static/live.js swaps in
    assert "Waiting for an executor" in progress and "none has looked for work since" in progress
    rollouts.pause(api.platform.uow, api.city, rid)
    assert "Waiting for an executor" not in browser.get(f"/rollouts/{rid}/progress").text
