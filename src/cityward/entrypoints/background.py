"""The one-machine rollout executor inside a server process (`cityward serve`, the demo's server).

A rollout started from the dashboard or the API is carried out by the same executor as
`cityward rollout run` (services/rollout_executor.py), in a thread with its own event loop so
device I/O and result writing never hold up page requests. It stops with the server: started
commands stay claimed under their lease, and whichever executor runs next resends them under the
same command id. When it stops on an error (a broker not up yet, the database away) it says why
and starts again, waiting longer each time; meanwhile rollout pages say no executor is looking
for work. `cityward serve --no-executor` leaves the work to `cityward worker` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from cityward.adapters.secretbox import SecretBox
from cityward.bootstrap import Platform
from cityward.config import Settings
from cityward.errors import CitywardError
from cityward.services import notifications
from cityward.services.rollout_executor import Executor, ExecutorOptions

log = logging.getLogger("cityward.serve")
FIRST_RETRY_S = 2.0
LONGEST_RETRY_S = 60.0


def alert_channels(settings: Settings) -> notifications.AlertChannels:
    """Where an executor's alerts to the city go: the channels of `cityward vulns notify`."""
    return notifications.alert_channels(settings.smtp_url.get_secret_value() if settings.smtp_url else None,
                                        settings.smtp_sender, settings.notify_private_networks)


def executor_options(settings: Settings, *, mqtt_url: str | None) -> ExecutorOptions:
    """What `cityward rollout run` would use, with this broker (None: HTTP devices only)."""
    return ExecutorOptions(mqtt_url=mqtt_url, firmware_store=settings.firmware_dir, listen=settings.firmware_listen,
                           public_url=settings.firmware_url, alerts=alert_channels(settings))


class BackgroundExecutor:
    def __init__(self, platform: Platform, options: ExecutorOptions,
                 report: Callable[[str], None] = log.warning) -> None:
        self.platform, self.options, self.report = platform, options, report
        self.restarts = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="cityward-executor",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """Let the executor finish its round and close its links; waits at most `timeout`."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.report(f"the in-process rollout executor did not stop within {timeout:.0f} s; "
                            "its claimed commands are resent by the next executor")

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        settings = self.platform.settings
        delay = FIRST_RETRY_S
        while not self._stop.is_set():
            executor = Executor(self.platform.uow, SecretBox(settings.secret_key_bytes()),
                                settings.secret_key_bytes(), self.options)
            try:
                await executor.run(self._stop)
            except Exception as exc:  # whatever stopped it, the server goes on and says so
                self.restarts += 1
                detail = exc.message if isinstance(exc, CitywardError) else f"{type(exc).__name__}: {exc}"
                log.debug("in-process rollout executor", exc_info=exc)
                self.report(f"the in-process rollout executor stopped: {detail}; starting it again in "
                            f"{delay:.0f} s (rollouts wait meanwhile)")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, LONGEST_RETRY_S)


class BackgroundAnchors:
    """`cityward serve` anchors the audit log: at start and then every `every_s` seconds, when
    something happened since the last anchor (services/auditanchors.py). A failure (the chain broken,
    or failing its last anchor; a delivery refused) is said each time and tried again next time."""

    def __init__(self, platform: Platform, every_s: float, report: Callable[[str], None] = log.warning) -> None:
        self.platform, self.every_s, self.report = platform, every_s, report
        self.anchored = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="cityward-anchors", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            wait = self.every_s
            try:
                self.tick()
            except Exception as exc:  # the server goes on; the next round tries again
                detail = exc.message if isinstance(exc, CitywardError) else f"{type(exc).__name__}: {exc}"
                log.debug("audit-log anchor", exc_info=exc)
                self.report(f"the audit log was not anchored: {detail}")

    def tick(self) -> bool:
        """Anchor now if the head moved; True when an anchor was made."""
        from cityward.services import auditanchors, notifications
        from cityward.services.organizations import system_caller

        plat, settings = self.platform, self.platform.settings
        key = auditanchors.signing_key(settings.secret_key_bytes())
        if not auditanchors.head_moved(plat.uow, key.public_key(), settings.audit_anchor_file):
            return False
        with plat.uow() as uow:
            caller = system_caller(uow.session, "audit-anchors")
        smtp = notifications.smtp_settings(settings.smtp_url.get_secret_value() if settings.smtp_url else None,
                                           settings.smtp_sender) if settings.audit_anchor_recipients else None
        done = auditanchors.anchor(plat.uow, caller, key, settings.audit_anchor_file,
                                   recipients=settings.audit_anchor_recipients,
                                   box=SecretBox(settings.secret_key_bytes()), smtp=smtp,
                                   allow_private=settings.notify_private_networks)
        self.anchored += 1
        for s in done.sent:
            if not s.ok:
                self.report(f"audit-log anchor of event {done.anchor.seq} not delivered to {s.organization} "
                            f"({s.channel}): {s.detail}")
        return True
