"""`cityward worker`: rollouts carried out by many processes on many machines, through procrastinate.

Why procrastinate: the rollout state already lives in PostgreSQL, and procrastinate queues jobs in
the same database (LISTEN/NOTIFY, `FOR UPDATE SKIP LOCKED`), so scale-out adds no broker to run,
secure and back up; it is asyncio-native like the device drivers, and it tracks worker heartbeats
so a dead worker's jobs can be found and retried.

Two jobs. `tick` (periodic, every second, one queued at a time across the cluster) advances waves
and claims the device actions that may start, exactly as the one-machine executor does, then defers
one `perform` job per claimed action. `perform` rebuilds the command from the database and carries
it out on whichever worker picks it up. Safety does not rest on the queue: a claim is a lease in
`rollout_actions`, and an action whose worker died is claimed again under the same command id once
its lease runs out, so the device answers from its stored result instead of acting twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import procrastinate

from cityward.services.rollout_executor import Executor

log = logging.getLogger("cityward.worker")
SCHEMA_LOCK = 7470002  # advisory lock: one worker creates procrastinate's tables


class WorkerRuntime:
    """The executor this worker process carries out jobs with (its links and firmware server)."""

    executor: Executor | None = None


def libpq_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def build_app(database_url: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq_url(database_url)))

    def executor() -> Executor:
        if WorkerRuntime.executor is None:
            raise RuntimeError("no executor in this process: jobs run inside `cityward worker`")
        return WorkerRuntime.executor

    @app.periodic(cron="* * * * * *", periodic_id="rollouts")
    @app.task(name="cityward.rollouts.tick", queueing_lock="cityward.rollouts.tick")
    async def tick(timestamp: int) -> None:
        claimed, _busy = await asyncio.to_thread(executor().claim_all)
        for action_id, command_id in claimed:
            await perform.defer_async(action_id=action_id, command_id=command_id)

    @app.task(name="cityward.rollouts.perform")
    async def perform(action_id: int, command_id: str) -> None:
        await executor().perform(action_id, command_id)

    @app.periodic(cron="*/10 * * * * *", periodic_id="stalled")
    @app.task(name="cityward.rollouts.retry_stalled", queueing_lock="cityward.rollouts.retry_stalled")
    async def retry_stalled(timestamp: int) -> None:
        """Jobs of workers that stopped sending heartbeats go back to the queue (a perform
        re-run sends the same command id, or finds its action already decided)."""
        for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=10):
            log.info("retrying job %s of a stalled worker", job.id)
            await app.job_manager.retry_job(job)

    return app


async def ensure_schema(app: procrastinate.App) -> None:
    """procrastinate's tables, created once (they live beside cityward's, prefixed procrastinate_)."""
    connector: Any = app.connector
    async with connector.pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        cur = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
        row = await cur.fetchone()
        if row and row[0]:
            return
        await conn.execute(app.schema_manager.get_schema())


async def run_worker(app: procrastinate.App, executor: Executor, *, concurrency: int, name: str) -> None:
    async with app.open_async():
        await ensure_schema(app)
        async with executor.session():
            WorkerRuntime.executor = executor
            try:
                await app.run_worker_async(concurrency=concurrency, name=name, wait=True,
                                           update_heartbeat_interval=2, stalled_worker_timeout=10)
            finally:
                WorkerRuntime.executor = None
