"""All wiring in one place: settings → engine → migrated schema → unit-of-work factory."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from cityward.adapters.storage.database import create_db_engine, migrate
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.config import Settings, load_settings


@dataclass
class Platform:
    settings: Settings
    engine: Engine
    uow: UnitOfWorkFactory

    def close(self) -> None:
        self.engine.dispose()


def bootstrap(settings: Settings | None = None, *, run_migrations: bool = True) -> Platform:
    settings = settings or load_settings()
    engine = create_db_engine(settings.database_url)
    if run_migrations:
        migrate(engine)
    return Platform(settings, engine, UnitOfWorkFactory(engine))
