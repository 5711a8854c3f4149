"""The Alembic migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from cityward.adapters.storage.database import SCHEMA_HEAD, alembic_config
from cityward.adapters.storage.models import Base
from cityward.bootstrap import Platform
from tests.conftest import PG_ADMIN_URL


def test_migrations_match_models(platform: Platform) -> None:
    def ours(name: str | None, type_: str, _parent: object) -> bool:
        """procrastinate's job-queue tables (cityward worker) are its own, not cityward's schema."""
        return not (type_ == "table" and (name or "").startswith("procrastinate_"))

    with platform.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_name": ours}), Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"


def test_schema_head_is_alembics_head(platform: Platform) -> None:
    """Start-up skips Alembic when the database is at SCHEMA_HEAD: it must be the real head, and the
    database the platform migrated must be at it."""
    script = ScriptDirectory.from_config(alembic_config(str(platform.engine.url)))
    assert script.get_current_head() == SCHEMA_HEAD
    with platform.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == SCHEMA_HEAD


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nothing has migrated yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    name = f"cityward_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_0006_fills_the_running_firmware_and_downgrades(empty_url: str) -> None:
    """A fleet stored under 0005 gains firmware_running: reported where a device reported, else
    inventoried; and 0006 can be undone."""
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0005")
    engine = create_engine(empty_url)
    now = datetime(2026, 11, 26, tzinfo=UTC)
    with engine.begin() as conn:
        for device_id, fw in (("CAM-1", "1.0"), ("CAM-2", "1.0")):
            conn.execute(text("INSERT INTO devices (id, kind, product_id, firmware_version, zone_id, created_at, "
                              "updated_at) VALUES (:i, 'camera', 1, :fw, 1, :t, :t)"),
                         {"i": device_id, "fw": fw, "t": now})
        conn.execute(text("INSERT INTO device_states (device_id, online, status_at, last_seen, transport, "
                          "credential_state, quarantined, firmware_version) "
                          "VALUES ('CAM-2', true, :t, :t, 'mqtt', 'unknown', false, '2.0')"), {"t": now})
    command.upgrade(cfg, "0006")
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT id, firmware_running FROM devices")).all()) == {
            "CAM-1": "1.0", "CAM-2": "2.0"}
        assert conn.execute(text("SELECT count(*) FROM vuln_matches")).scalar() == 0
    command.downgrade(cfg, "0005")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM devices")).scalar() == 2
    engine.dispose()
