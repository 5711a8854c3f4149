"""Shared fixtures: every storage/service test runs on SQLite and on the real PostgreSQL.

PostgreSQL is never skipped: if it cannot be reached the tests fail and say so. Each test
session creates its own database on the server and drops it at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from cityward.bootstrap import Platform, bootstrap
from cityward.config import load_settings
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.services import organizations, setup

PG_ADMIN_URL = os.environ.get("CITYWARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    name = f"cityward_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is required at {PG_ADMIN_URL} and cannot be reached ({exc}). "
            "Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            pytrace=False,
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_TABLES = ("audit_events", "api_tokens", "devices", "zone_responsibilities", "products", "device_states",
           "device_history", "discovered_devices", "device_secrets", "broker_routes", "device_commands",
           "audit_findings", "audit_runs", "policy_acks", "policy_versions", "policy_waivers",
           "rollout_actions", "rollout_waves", "rollouts", "firmware_releases", "firmware_keys", "desired_configs",
           "city_ca", "vuln_matches", "advisory_entries", "advisories", "kev_entries", "epss_scores",
           "sbom_vex", "sbom_components", "sboms", "org_contacts", "notifications", "web_sessions", "users",
           "zones", "organizations", "executor_heartbeats", "vendor_aliases")


@pytest.fixture(params=["sqlite", "postgresql"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    """A migrated, empty installation on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cityward.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    plat = bootstrap(load_settings(database_url=url, secret_key_file=tmp_path / "key",
                                   audit_anchor_file=tmp_path / "anchors.jsonl"))
    if request.param == "postgresql":
        with plat.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY CASCADE"))
    yield plat
    plat.close()


@pytest.fixture
def city(platform: Platform) -> Caller:
    """An initialized installation; the local operator (city admin) acting."""
    setup.initialize(platform.uow, "Springfield", "local:test", admin_user=None)
    return organizations.local_operator(platform.uow, "test")


def caller_for(platform: Platform, org_name: str, role: Role = Role.OPERATOR) -> Caller:
    """A caller acting for an existing organization (as its token would)."""
    org = next(o for o in organizations.list_orgs(platform.uow, organizations.local_operator(platform.uow, "t"))
               if o.name == org_name)
    return Caller(actor=f"test:{org_name}", org_id=org.id, org_name=org.name,
                  org_kind=OrgKind(org.kind), role=role, brand=org.brand)
