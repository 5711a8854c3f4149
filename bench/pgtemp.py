"""A fresh PostgreSQL database for one benchmark run, dropped afterwards (shared by the benchmarks;
the script's folder is on sys.path when a benchmark runs)."""

from __future__ import annotations

import uuid

import psycopg


class Database:
    """Created on the admin connection (`postgresql://…/postgres`); `url` is SQLAlchemy's form."""

    def __init__(self, pg_admin: str, *, keep: bool = False) -> None:
        self.pg_admin = pg_admin
        self.keep = keep
        self.name = f"cityward_bench_{uuid.uuid4().hex[:8]}"
        base = pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        self.url = f"{base}/{self.name}"

    def __enter__(self) -> Database:
        with psycopg.connect(self.pg_admin, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            return
        with psycopg.connect(self.pg_admin, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
