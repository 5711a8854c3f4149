"""SQLAlchemy models: the tables behind inventory, catalog, organizations, tokens and the audit log.

Indexes follow the `devices list` filters so they stay fast at 1,000,000 devices on PostgreSQL.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class OrganizationRow(Base):
    __tablename__ = "organizations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # domain.names.name_key(name): the name's identity, what every lookup and import matches on.
    # Text: NFKC may lengthen a name.
    name_key: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    brand: Mapped[str | None] = mapped_column(String(128))  # manufacturers: brand they make
    contact_email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class ZoneRow(Base):
    __tablename__ = "zones"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    name_key: Mapped[str] = mapped_column(Text, unique=True)  # as for organizations
    criticality: Mapped[str] = mapped_column(String(10))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("zones.id", ondelete="RESTRICT"))
    maintenance_window: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class ZoneResponsibilityRow(Base):
    """A zone-level duty; devices inherit it down the zone tree unless they override it."""

    __tablename__ = "zone_responsibilities"
    __table_args__ = (UniqueConstraint("zone_id", "duty"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id", ondelete="CASCADE"))
    duty: Mapped[str] = mapped_column(String(20))
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)


class ProductRow(Base):
    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("brand_key", "model_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    brand: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    brand_key: Mapped[str] = mapped_column(String(128))
    model_key: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str | None] = mapped_column(String(32))
    relabel_of_id: Mapped[int | None] = mapped_column(ForeignKey("products.id"))
    origin_status: Mapped[str] = mapped_column(String(10))
    # Denormalized end of the relabel chain, recomputed whenever the catalog changes.
    origin_brand: Mapped[str] = mapped_column(String(128))
    origin_model: Mapped[str] = mapped_column(String(128))
    origin_brand_key: Mapped[str] = mapped_column(String(128), index=True)
    origin_depth: Mapped[int] = mapped_column(Integer, default=0)
    end_of_support: Mapped[date | None] = mapped_column(Date)
    min_firmware: Mapped[str | None] = mapped_column(String(64))
    version_scheme: Mapped[str] = mapped_column(String(10))
    # Minutes a firmware upgrade takes on this product, as its maker or the city declares it: a
    # rollout's attempt timeout and how long a silent device still counts as working (0011).
    upgrade_minutes: Mapped[float | None] = mapped_column(Float)
    # The firmware platform it runs ("ALEOS"): one more name advisories know it by (0013).
    platform: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


def _sparse_index(column: str) -> Index:
    """An index over the rows that have a value: most devices leave these columns empty, and a
    full index would be maintained for every row of a million-row import for nothing."""
    where = text(f"{column} IS NOT NULL")
    return Index(f"ix_devices_{column}", column, postgresql_where=where, sqlite_where=where)


class DeviceRow(Base):
    """A device. Its references (product, zone, organizations) carry no foreign-key constraint:
    each row of a bulk merge would fire one trigger per reference (about 40 s per million rows on
    PostgreSQL), while the only writer, the import merge (adapters/storage/staging.py), resolves
    every reference by a join in the same statement, and products, zones and organizations are
    never deleted. Add a constraint back with any service that deletes them."""

    __tablename__ = "devices"
    __table_args__ = (
        *(_sparse_index(c) for c in (
            "installer_id", "maintainer_id", "supplier_id", "credentials_org_id", "remote_access_org_id")),
        # (product, running firmware) classes — what vulnerability matches are stored per — read
        # from the index alone, and a class's devices found without scanning the fleet.
        Index("ix_devices_product_firmware", "product_id", "firmware_running"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    serial: Mapped[str | None] = mapped_column(String(128), index=True)
    mac: Mapped[str | None] = mapped_column(String(17), unique=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    product_id: Mapped[int] = mapped_column(Integer)
    hardware_version: Mapped[str | None] = mapped_column(String(64))
    firmware_version: Mapped[str] = mapped_column(String(64), index=True)
    # The firmware the device runs: as it last reported, else as inventoried. Kept by its two
    # writers (the import merge and state ingestion) so that readers need not join device_states.
    firmware_running: Mapped[str] = mapped_column(String(64))
    zone_id: Mapped[int] = mapped_column(Integer, index=True)
    address: Mapped[str | None] = mapped_column(String(260))
    protocol: Mapped[str | None] = mapped_column(String(8))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    owner_id: Mapped[int | None] = mapped_column(Integer)
    # Per-device duty overrides (see domain.responsibility.DEVICE_COLUMN).
    installer_id: Mapped[int | None] = mapped_column(Integer)
    maintainer_id: Mapped[int | None] = mapped_column(Integer)
    supplier_id: Mapped[int | None] = mapped_column(Integer)
    credentials_org_id: Mapped[int | None] = mapped_column(Integer)
    remote_access_org_id: Mapped[int | None] = mapped_column(Integer)
    installed_at: Mapped[date | None] = mapped_column(Date)
    # ";a;b;" so a tag filter is one indexed-free LIKE that works the same on SQLite and PostgreSQL.
    tags: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class DeviceStateRow(Base):
    """What a device last reported, one row per device that ever reported.

    Kept apart from `devices` on purpose: it is rewritten thousands of times a second, and a narrow
    table with only its primary key indexed (plus last_seen) lets PostgreSQL update in place (HOT)
    instead of touching the inventory's dozen indexes on every message."""

    __tablename__ = "device_states"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    online: Mapped[bool] = mapped_column(Boolean)
    offline_reason: Mapped[str | None] = mapped_column(String(32))  # will, silence, gateway, poll
    status_at: Mapped[datetime] = mapped_column(Timestamp)  # when `online` last changed
    last_seen: Mapped[datetime] = mapped_column(Timestamp, index=True)
    transport: Mapped[str] = mapped_column(String(8))  # mqtt or http
    via_gateway: Mapped[str | None] = mapped_column(String(64))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    reported_at: Mapped[datetime | None] = mapped_column(Timestamp)  # the device's own clock
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    hardware_version: Mapped[str | None] = mapped_column(String(64))
    uptime_s: Mapped[int | None] = mapped_column(BigInteger)
    services: Mapped[list[str] | None] = mapped_column(JSON)
    remote_access: Mapped[list[str] | None] = mapped_column(JSON)
    credential_state: Mapped[str] = mapped_column(String(10), default="unknown")
    password_changed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    certificates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    cert_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)  # earliest not_after
    config_hash: Mapped[str | None] = mapped_column(String(64))
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False)
    applied_commands: Mapped[int | None] = mapped_column(BigInteger)


class DeviceHistoryRow(Base):
    """A change in a reported fact (online, firmware, credentials, services, ...): the trend data.

    Written only when a fact changes, not per message, so it grows with events, not with traffic."""

    __tablename__ = "device_history"
    __table_args__ = (Index("ix_device_history_device_at", "device_id", "at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    fact: Mapped[str] = mapped_column(String(32))
    old: Mapped[Any] = mapped_column(JSON)
    new: Mapped[Any] = mapped_column(JSON)


class DiscoveredDeviceRow(Base):
    """A device that announced itself (or answered a probe) but is not in the inventory: pending
    until an authorized user approves or rejects it; never a target of operations meanwhile."""

    __tablename__ = "discovered_devices"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(10), index=True)  # pending, approved, rejected
    source: Mapped[str] = mapped_column(String(8))  # mqtt or http
    address: Mapped[str | None] = mapped_column(String(260))
    hello: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_seen: Mapped[datetime] = mapped_column(Timestamp)
    last_seen: Mapped[datetime] = mapped_column(Timestamp)
    announcements: Mapped[int] = mapped_column(Integer, default=1)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(Timestamp)
    reason: Mapped[str | None] = mapped_column(String(500))


class DeviceSecretRow(Base):
    """A device secret (broker password, HTTP admin password), AES-256-GCM encrypted at rest."""

    __tablename__ = "device_secrets"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)  # mqtt, admin
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)  # nonce || ciphertext+tag
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class BrokerRouteRow(Base):
    """How a device reaches the broker: directly (gateway_id NULL) or behind a gateway."""

    __tablename__ = "broker_routes"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway_id: Mapped[str | None] = mapped_column(String(64), index=True)
    provisioned_at: Mapped[datetime] = mapped_column(Timestamp)


class DeviceCommandRow(Base):
    """One command sent to one device. `command_id` is generated once and reused on every retry, so
    a device applies it at most once; a result for a terminal command changes nothing."""

    __tablename__ = "device_commands"
    __table_args__ = (Index("ix_device_commands_device_issued", "device_id", "issued_at"),)
    command_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # secrets are never stored here
    status: Mapped[str] = mapped_column(String(12))  # pending, accepted, in_progress, terminal ones
    progress: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(String(500))
    issued_by: Mapped[str] = mapped_column(String(200))
    issued_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class TokenRow(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(10))
    secret_hash: Mapped[str] = mapped_column(String(64))  # sha256 of a 256-bit random secret
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_used_at: Mapped[datetime | None] = mapped_column(Timestamp)


class UserRow(Base):
    """A person who signs in to the dashboard: a member of one organization with one role."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    role: Mapped[str] = mapped_column(String(10))
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id, with its parameters
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    created_by: Mapped[str] = mapped_column(String(200))
    password_changed_at: Mapped[datetime] = mapped_column(Timestamp)
    disabled_at: Mapped[datetime | None] = mapped_column(Timestamp)
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)  # consecutive
    locked_until: Mapped[datetime | None] = mapped_column(Timestamp)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(Timestamp)


class WebSessionRow(Base):
    """A signed-in browser. The cookie holds a random secret; only its SHA-256 is stored."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))  # forms echo it; useless without the cookie
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    last_seen_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)  # the latest it can last, however active
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_target", "target_type", "target_id"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    org_id: Mapped[int | None] = mapped_column(Integer, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(200))
    before: Mapped[Any] = mapped_column(JSON)
    after: Mapped[Any] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditRunRow(Base):
    """One evaluation of a policy over the fleet (or over the caller's scope)."""

    __tablename__ = "audit_runs"
    __table_args__ = (Index("ix_audit_runs_policy_scope", "policy_name", "scope_org_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_name: Mapped[str] = mapped_column(String(100))
    policy_sha256: Mapped[str] = mapped_column(String(64))
    scope_org_id: Mapped[int] = mapped_column(Integer)  # whose view of the fleet was audited
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    finished_at: Mapped[datetime] = mapped_column(Timestamp)
    run_by: Mapped[str] = mapped_column(String(200))
    devices: Mapped[int] = mapped_column(Integer)
    findings: Mapped[int] = mapped_column(Integer)
    new: Mapped[int] = mapped_column(Integer)
    resolved: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)  # counts by severity and rule, scores
    policy_version: Mapped[int | None] = mapped_column(Integer)  # the published version audited, if any


class AuditFindingRow(Base):
    """A device failing a rule in one run, with the facts that made it fail and who must act.

    Written millions at a time by COPY in (device, rule) order, so the first index appends instead
    of splitting pages. The second serves the devices failing one rule (rollouts, the findings
    page): without it a rare rule's few findings meant reading the whole run. run_id carries no
    foreign key: its per-row trigger doubled the load time. Runs are never deleted while their
    findings exist."""

    __tablename__ = "audit_findings"
    __table_args__ = (Index("ix_audit_findings_run_device", "run_id", "device_id"),
                      Index("ix_audit_findings_run_rule_device", "run_id", "rule_id", "device_id"))
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[str] = mapped_column(String(64))
    rule_id: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(10))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    responsible_org_id: Mapped[int | None] = mapped_column(Integer)
    first_seen_run: Mapped[int] = mapped_column(Integer)  # the run in which this finding first appeared
    waiver_id: Mapped[int | None] = mapped_column(Integer)  # an approved, unexpired waiver covers it


class PolicyVersionRow(Base):
    """A published policy: immutable, numbered; the newest is the version in force."""

    __tablename__ = "policy_versions"
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime] = mapped_column(Timestamp)
    published_by: Mapped[str] = mapped_column(String(200))


class PolicyAckRow(Base):
    """An organization's acknowledgement of a published policy version."""

    __tablename__ = "policy_acks"
    version: Mapped[int] = mapped_column(ForeignKey("policy_versions.number"), primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    acked_at: Mapped[datetime] = mapped_column(Timestamp)
    acked_by: Mapped[str] = mapped_column(String(200))


class WaiverRow(Base):
    """An accepted exception to a rule, for one device or a selector, until it expires."""

    __tablename__ = "policy_waivers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64), index=True)
    selector: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"device": id} or {"zone"|"kind"|"product"|"tag": v}
    reason: Mapped[str] = mapped_column(String(1000))
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_org_id: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    status: Mapped[str] = mapped_column(String(10))  # requested, approved, rejected, revoked
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(Timestamp)


class FirmwareKeyRow(Base):
    """A manufacturer's Ed25519 firmware-signing public key, registered with the city."""

    __tablename__ = "firmware_keys"
    key_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    manufacturer: Mapped[str] = mapped_column(String(128))
    manufacturer_key: Mapped[str] = mapped_column(String(128), index=True)
    public_key: Mapped[str] = mapped_column(String(64))  # base64 of the raw 32 bytes
    added_by: Mapped[str] = mapped_column(String(200))
    added_at: Mapped[datetime] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)


class FirmwareReleaseRow(Base):
    """A firmware image for the true manufacturer's product, verified (hash and signature) when it
    entered the catalog; the image itself is a file named by its SHA-256 in the data directory."""

    __tablename__ = "firmware_releases"
    __table_args__ = (UniqueConstraint("brand_key", "model_key", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    brand: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    brand_key: Mapped[str] = mapped_column(String(128))
    model_key: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(ForeignKey("firmware_keys.key_id"))
    notes: Mapped[str | None] = mapped_column(Text)
    sbom: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    uploaded_by: Mapped[str] = mapped_column(String(200))
    uploaded_at: Mapped[datetime] = mapped_column(Timestamp)


class DesiredConfigRow(Base):
    """The configuration devices matching a selector should report; the others are drifted."""

    __tablename__ = "desired_configs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    selector: Mapped[dict[str, Any]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class RolloutRow(Base):
    """A campaign: one operation to many devices in waves. Only the operator's control state is
    stored; progress and status are derived from the actions."""

    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    operation: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # e.g. {"release": 3} or {"config": 2}
    target: Mapped[dict[str, Any]] = mapped_column(JSON)  # how the devices were chosen
    options: Mapped[dict[str, Any]] = mapped_column(JSON)  # WaveOptions
    control: Mapped[str] = mapped_column(String(20))
    control_reason: Mapped[str | None] = mapped_column(String(500))
    org_id: Mapped[int] = mapped_column(Integer)  # the organization that created it
    needs_approval: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    approved_by: Mapped[str | None] = mapped_column(String(200))
    approved_at: Mapped[datetime | None] = mapped_column(Timestamp)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class RolloutWaveRow(Base):
    """A wave's timeline; its counts come from the actions."""

    __tablename__ = "rollout_waves"
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    verdict: Mapped[str | None] = mapped_column(String(10))


class RolloutActionRow(Base):
    """One device in one rollout: its status and attempts. The command id of the attempt in flight
    is stored before the command is sent, so a restarted executor re-sends the same id and the
    device answers from its stored result instead of applying it again."""

    __tablename__ = "rollout_actions"
    __table_args__ = (UniqueConstraint("rollout_id", "device_id"),
                      Index("ix_rollout_actions_work", "rollout_id", "wave", "status"),
                      Index("ix_rollout_actions_device_status", "device_id", "status"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"))
    device_id: Mapped[str] = mapped_column(String(64))
    wave: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    command_id: Mapped[str | None] = mapped_column(String(128))
    secret: Mapped[bytes | None] = mapped_column(LargeBinary)  # the attempt's new password, encrypted
    lease_until: Mapped[datetime | None] = mapped_column(Timestamp)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class CityCaRow(Base):
    """The city's device certificate authority: its certificate, and its private key sealed with
    the city's secret key. One row; created on first use."""

    __tablename__ = "city_ca"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    certificate: Mapped[str] = mapped_column(Text)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


# --- vulnerability intelligence ----------------------------------------------------------------


class AdvisoryRow(Base):
    """One advisory document as last imported (a newer revision replaces it; the change is in the
    audit log and in `previous_revision`/`change`)."""

    __tablename__ = "advisories"
    __table_args__ = (UniqueConstraint("source", "publisher_key", "doc_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(10))  # csaf | cve5
    publisher: Mapped[str] = mapped_column(String(200))
    publisher_key: Mapped[str] = mapped_column(String(200))
    doc_id: Mapped[str] = mapped_column(String(200))  # CSAF tracking id, or the CVE id
    title: Mapped[str] = mapped_column(String(500))
    category: Mapped[str] = mapped_column(String(40))  # csaf_security_advisory, csaf_vex, cve_record, …
    revision: Mapped[str] = mapped_column(String(40))
    released_at: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime | None] = mapped_column(Timestamp)
    cves: Mapped[list[str]] = mapped_column(JSON)
    url: Mapped[str | None] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))  # of the document as imported
    unparsed: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # what could not be normalized, and why
    previous_revision: Mapped[str | None] = mapped_column(String(40))
    change: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # entries added / removed vs the previous
    imported_by: Mapped[str] = mapped_column(String(200))
    imported_at: Mapped[datetime] = mapped_column(Timestamp)


class AdvisoryEntryRow(Base):
    """One normalized statement: (product identity, version range, status, remediation) for a CVE."""

    __tablename__ = "advisory_entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advisory_id: Mapped[int] = mapped_column(ForeignKey("advisories.id", ondelete="CASCADE"), index=True)
    cve: Mapped[str] = mapped_column(String(32), index=True)
    vendor: Mapped[str | None] = mapped_column(String(200))
    product: Mapped[str | None] = mapped_column(String(200))
    vendor_key: Mapped[str | None] = mapped_column(String(200))
    product_key: Mapped[str | None] = mapped_column(String(200), index=True)
    model_pattern: Mapped[str | None] = mapped_column(String(300))  # a model number with * wildcards, as a regex
    purl: Mapped[str | None] = mapped_column(String(300))
    purl_key: Mapped[str | None] = mapped_column(String(300), index=True)  # "type/namespace/name", for SBOMs
    cpe: Mapped[str | None] = mapped_column(String(300))
    hashes: Mapped[list[str]] = mapped_column(JSON)
    versions: Mapped[str | None] = mapped_column(String(500))  # the range as written; NULL: every version
    intervals: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # [{lo, lo_incl, hi, hi_incl}, …]
    scheme: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(24))  # affected | not_affected | fixed | under_investigation
    justification: Mapped[str | None] = mapped_column(String(100))  # VEX
    remediation: Mapped[str | None] = mapped_column(String(30))  # vendor_fix, workaround, mitigation, …
    remediation_detail: Mapped[str | None] = mapped_column(Text)
    remediation_url: Mapped[str | None] = mapped_column(String(500))
    fixed_version: Mapped[str | None] = mapped_column(String(128))
    cvss: Mapped[float | None] = mapped_column(Float)
    cvss_vector: Mapped[str | None] = mapped_column(String(200))
    exploited: Mapped[bool] = mapped_column(Boolean, default=False)  # the advisory says it is exploited


class KevEntryRow(Base):
    """CISA's Known Exploited Vulnerabilities catalog, as last imported."""

    __tablename__ = "kev_entries"
    cve: Mapped[str] = mapped_column(String(32), primary_key=True)
    vendor: Mapped[str] = mapped_column(String(200))
    product: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(500))
    date_added: Mapped[date] = mapped_column(Date)
    due_date: Mapped[date | None] = mapped_column(Date)
    ransomware: Mapped[bool] = mapped_column(Boolean)
    required_action: Mapped[str | None] = mapped_column(Text)
    catalog_version: Mapped[str | None] = mapped_column(String(40))


class EpssScoreRow(Base):
    """FIRST's Exploit Prediction Scoring System, one row per CVE, as last imported."""

    __tablename__ = "epss_scores"
    cve: Mapped[str] = mapped_column(String(32), primary_key=True)
    epss: Mapped[float] = mapped_column(Float)
    percentile: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(40))
    score_date: Mapped[date | None] = mapped_column(Date)


class VulnMatchRow(Base):
    """A product running a firmware (a *class* of devices) affected by a CVE, after precedence
    (not-affected, fixed and VEX statements win). Its devices are those with this product and
    `firmware_running`: a million devices are about 40,000 classes. KEV and EPSS are joined by CVE
    when matches are read (adapters/vuln_polars.device_priority), so a daily EPSS file re-matches
    nothing. Rows are rewritten only when they change, so `matched_at` is when the class was first
    found affected, and a due date does not slide on re-matching."""

    __tablename__ = "vuln_matches"
    # SQLite: the rows live in the primary key's b-tree (no separate rowid table), so a full match
    # written in key order is one sequential append rather than two trees filled at random.
    __table_args__ = (Index("ix_vuln_matches_cve", "cve"), {"sqlite_with_rowid": False})
    product_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    firmware: Mapped[str] = mapped_column(String(64), primary_key=True)
    cve: Mapped[str] = mapped_column(String(32), primary_key=True)
    advisory_id: Mapped[int] = mapped_column(Integer)
    entry_id: Mapped[int] = mapped_column(Integer)
    via: Mapped[str] = mapped_column(String(10))  # product | origin | platform | component
    fixed_version: Mapped[str | None] = mapped_column(String(128))
    remediation: Mapped[str | None] = mapped_column(String(30))
    cvss: Mapped[float | None] = mapped_column(Float)
    exploited: Mapped[bool] = mapped_column(Boolean)  # the advisory itself says so
    # A hash of the columns above: re-matching compares it instead of reading every column back.
    fingerprint: Mapped[int] = mapped_column(BigInteger)
    matched_at: Mapped[datetime] = mapped_column(Timestamp)


class SbomRow(Base):
    """A firmware release's CycloneDX SBOM, as last imported (its components are `sbom_components`)."""

    __tablename__ = "sboms"
    release_id: Mapped[int] = mapped_column(ForeignKey("firmware_releases.id"), primary_key=True)
    spec_version: Mapped[str] = mapped_column(String(8))
    serial_number: Mapped[str | None] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(300))  # what the SBOM describes
    components: Mapped[int] = mapped_column(Integer)
    duplicates: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    imported_by: Mapped[str] = mapped_column(String(200))
    imported_at: Mapped[datetime] = mapped_column(Timestamp)


class SbomComponentRow(Base):
    """A software component inside a firmware release, keyed the way advisories name packages."""

    __tablename__ = "sbom_components"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("sboms.release_id", ondelete="CASCADE"), index=True)
    purl_key: Mapped[str | None] = mapped_column(String(300), index=True)  # "type/namespace/name"
    name: Mapped[str] = mapped_column(String(300))
    version: Mapped[str | None] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(40))


class SbomVexRow(Base):
    """The SBOM's own VEX: a CVE the manufacturer says this release's component is not affected by."""

    __tablename__ = "sbom_vex"
    release_id: Mapped[int] = mapped_column(ForeignKey("sboms.release_id", ondelete="CASCADE"), primary_key=True)
    cve: Mapped[str] = mapped_column(String(64), primary_key=True)
    purl_key: Mapped[str] = mapped_column(String(300), primary_key=True)


class OrgContactRow(Base):
    """Where an organization wants to hear about vulnerabilities: a signed webhook and/or e-mail."""

    __tablename__ = "org_contacts"
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    webhook_secret: Mapped[bytes | None] = mapped_column(LargeBinary)  # AES-GCM sealed, like device secrets
    email: Mapped[str | None] = mapped_column(String(254))
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class NotificationRow(Base):
    """One delivery attempt of one notification; a notification delivered once is not sent again."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_key", "idempotency_key", "channel"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64))
    org_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(60))
    channel: Mapped[str] = mapped_column(String(10))
    target: Mapped[str] = mapped_column(String(500))  # the URL without secrets, or the address
    ok: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime] = mapped_column(Timestamp)


class ExecutorHeartbeatRow(Base):
    """When each rollout executor (`cityward serve`'s, `rollout run`, a `cityward worker`) last looked
    for work: the rollout page tells its reader when nobody has for a while. A sign of life, not a
    change anyone made: not in the audit log."""

    __tablename__ = "executor_heartbeats"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)  # host-pid, or the worker's name
    seen_at: Mapped[datetime] = mapped_column(Timestamp)


class VendorAliasRow(Base):
    """A name advisories or inventories use for a vendor, and the vendor it means: the city's
    additions to `domain.vendors.DEFAULT_ALIASES` (which are not stored). Matching reads both."""

    __tablename__ = "vendor_aliases"
    id: Mapped[int] = mapped_column(primary_key=True)
    alias: Mapped[str] = mapped_column(String(200))
    alias_key: Mapped[str] = mapped_column(String(200), unique=True)
    vendor: Mapped[str] = mapped_column(String(200))
    vendor_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    created_by: Mapped[str] = mapped_column(String(200))
