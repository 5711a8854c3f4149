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
from sqlalchemy.exc import IntegrityError

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


def test_0009_keys_names_and_keeps_clashes_apart_for_the_doctor(empty_url: str) -> None:
    """Names earlier versions stored as different ("Harbour" and "harbour") keep their rows: the oldest
    holds the name's key, a later one a key no name has (reported by `cityward doctor`); product keys
    become NFKC; and 0009 can be undone."""
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0008")
    engine = create_engine(empty_url)
    now = datetime(2026, 12, 7, tzinfo=UTC)
    with engine.begin() as conn:
        for i, name in ((1, "Harbour"), (2, "harbour"), (3, "Pier 9")):
            conn.execute(text("INSERT INTO zones (id, name, criticality, created_at) VALUES (:i, :n, 'medium', :t)"),
                         {"i": i, "n": name, "t": now})
        for i, name, kind in ((1, "Springfield", "city"), (2, "Tideway", "integrator"), (3, "TIDEWAY", "city")):
            conn.execute(text("INSERT INTO organizations (id, name, kind, created_at) VALUES (:i, :n, :k, :t)"),
                         {"i": i, "n": name, "k": kind, "t": now})
        for i, brand in ((1, "Lumo"), (2, "\uff2cumo")):  # full-width L: distinct before NFKC
            conn.execute(text(
                "INSERT INTO products (id, brand, model, brand_key, model_key, origin_status, origin_brand, "
                "origin_model, origin_brand_key, origin_depth, version_scheme, created_at, updated_at) VALUES "
                "(:i, :b, 'L100', :k, 'l100', 'unknown', :b, 'L100', :k, 0, 'dotted', :t, :t)"),
                {"i": i, "b": brand, "k": brand.casefold(), "t": now})
    command.upgrade(cfg, "0009")
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT id, name_key FROM zones")).all()) == {
            1: "harbour", 2: "harbour\x1f2", 3: "pier 9"}
        assert dict(conn.execute(text("SELECT id, name_key FROM organizations")).all()) == {
            1: "springfield", 2: "tideway", 3: "tideway\x1f3"}
        assert sorted(conn.execute(text("SELECT id, brand_key, model_key FROM products")).all()) == [
            (1, "lumo", "l100"), (2, "lumo", "l100\x1f2")]
    with engine.begin() as conn, pytest.raises(IntegrityError):
        conn.execute(text("INSERT INTO zones (name, name_key, criticality, created_at) "
                          "VALUES ('HARBOUR', 'harbour', 'low', :t)"), {"t": now})
    command.downgrade(cfg, "0008")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM zones")).scalar() == 3
        assert sorted(conn.execute(text("SELECT brand_key FROM products")).scalars()) == ["lumo", "\uff4cumo"]
    engine.dispose()
