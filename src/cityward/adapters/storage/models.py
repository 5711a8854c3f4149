"""SQLAlchemy models: the tables behind inventory, catalog, organizations, tokens and the audit log.

Indexes follow the `devices list` filters so they stay fast at 1,000,000 devices on PostgreSQL.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
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
    kind: Mapped[str] = mapped_column(String(20), index=True)
    brand: Mapped[str | None] = mapped_column(String(128))  # manufacturers: brand they make
    contact_email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class ZoneRow(Base):
    __tablename__ = "zones"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
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
    __table_args__ = tuple(_sparse_index(c) for c in (
        "installer_id", "maintainer_id", "supplier_id", "credentials_org_id", "remote_access_org_id",
        "last_seen",
    ))
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    serial: Mapped[str | None] = mapped_column(String(128), index=True)
    mac: Mapped[str | None] = mapped_column(String(17), unique=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    product_id: Mapped[int] = mapped_column(Integer, index=True)
    hardware_version: Mapped[str | None] = mapped_column(String(64))
    firmware_version: Mapped[str] = mapped_column(String(64), index=True)
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
    # Reported state (filled by device connectivity; empty until a device reports).
    credential_state: Mapped[str] = mapped_column(String(10), default="unknown")
    password_changed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    services: Mapped[list[str] | None] = mapped_column(JSON)
    certificates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    remote_access: Mapped[list[str] | None] = mapped_column(JSON)
    reported_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    config_hash: Mapped[str | None] = mapped_column(String(64))
    last_seen: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
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
