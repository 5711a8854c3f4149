"""The Alembic migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from cityward.adapters.storage.database import SCHEMA_HEAD, alembic_config
from cityward.adapters.storage.models import Base
from cityward.bootstrap import Platform


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
