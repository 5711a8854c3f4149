"""Wire schemas of the REST API: `<Thing>In` is what a client sends, `<Thing>Out` what it gets.

The `In` models only guard the edge (types, lengths, no control characters, no unknown fields);
every business rule stays in the services, so the CLI and the API reject the same things with
the same messages. `Out` models are built from the services' views with `from_attributes`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# No control characters anywhere: they are never valid in a name, and PostgreSQL rejects NUL
# in text parameters with a driver error instead of a clean "not found".
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


def _text(max_length: int) -> Any:
    return StringConstraints(max_length=max_length, pattern=NO_CONTROL)


Name = Annotated[str, _text(100)]
Label = Annotated[str, _text(128)]
ShortText = Annotated[str, _text(64)]

T = TypeVar("T")


class _In(BaseModel):
    # An unknown field is an error, as an unknown column is in an inventory file.
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- problems (RFC 9457) -------------------------------------------------------------------


class ProblemItemOut(_Out):
    row: int | None = None
    field: str | None = None
    source: str | None = Field(default=None, description="where, when not the request itself (e.g. a policy rule)")
    message: str


class ProblemOut(BaseModel):
    """An RFC 9457 problem details body, served as `application/problem+json`."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    hint: str | None = None
    errors: list[ProblemItemOut] = Field(default_factory=list)
    more: int = Field(0, description="problems found but not listed, to keep responses bounded")


class PageOut(BaseModel, Generic[T]):
    """One page of a list; pass `next_after` back as `after` for the next page (null: done)."""

    items: list[T]
    total: int | None = Field(description="items matching the filters, over all pages (first page only)")
    next_after: str | None = None


class HealthOut(BaseModel):
    status: str
    database: str
    initialized: bool | None = None


# --- devices ---------------------------------------------------------------------------------


class DeviceOut(_Out):
    id: str
    kind: str
    brand: str
    model: str
    manufacturer: str = Field(description="the true manufacturer, through OEM/ODM relabels")
    origin_model: str
    origin_status: str
    firmware_version: str
    zone: str
    serial: str | None
    mac: str | None
    address: str | None
    protocol: str | None
    responsible: dict[str, str | None] = Field(description="duty → organization")
    owner: str | None
    end_of_support: str | None
    last_seen: datetime | None
    online: bool | None
    credential_state: str
    record: dict[str, Any] = Field(description="the full inventory row, as export writes it")


class DeviceIn(_In):
    """One inventory row (the id comes from the path). Values are checked by the same rules as an
    import; fields left out keep their stored values on an existing device."""

    kind: str
    brand: str
    model: str
    firmware_version: str
    zone: str
    serial: str | None = None
    mac: str | None = None
    hardware_version: str | None = None
    address: str | None = None
    protocol: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    owner: str | None = None
    installer: str | None = None
    maintainer: str | None = None
    supplier: str | None = None
    installed_at: str | None = Field(default=None, description="YYYY-MM-DD")
    tags: list[str] | None = None


class DevicePageOut(PageOut[DeviceOut]):
    pass


class DeviceSummaryRowOut(_Out):
    manufacturer: str
    brand: str
    model: str
    firmware_version: str
    devices: int


class DeviceSummaryOut(BaseModel):
    items: list[DeviceSummaryRowOut]
    devices: int = Field(description="devices counted over all rows")


class ImportReportOut(_Out):
    source: str
    rows_read: int
    created: int
    updated: int
    unchanged: int = Field(description="existing devices the file describes exactly as stored")
    imported: int
    rejected_rows: int
    problems: list[ProblemItemOut]
    more_problems: int
    committed: bool
    created_zones: list[str]
    created_products: list[str]
    ignored_columns: list[str]
    sha256: str


# --- products --------------------------------------------------------------------------------


class ProductIn(_In):
    """One catalog row; the same columns and rules as a catalog file."""

    brand: Label
    model: Label
    kind: Annotated[str, _text(32)] | None = None
    origin_brand: Label | None = Field(None, description="set with origin_model for a relabel")
    origin_model: Label | None = None
    end_of_support: Annotated[str, _text(10)] | None = Field(None, description="YYYY-MM-DD")
    min_firmware: ShortText | None = None
    version_scheme: Annotated[str, _text(16)] | None = None
    upgrade_minutes: float | None = Field(None, gt=0, le=1440, description=(
        "minutes a firmware upgrade takes on this product: rollouts wait this long"))


class ProductOut(_Out):
    id: int
    brand: str
    model: str
    kind: str | None
    origin_status: str
    manufacturer: str
    origin_model: str
    chain: list[str] = Field(description='"Brand Model" from this product to its origin')
    end_of_support: date | None
    min_firmware: str | None
    version_scheme: str
    devices: int = Field(description="devices of this product that the caller may see")
    upgrade_minutes: float | None = Field(None, description="declared firmware upgrade duration")


class ProductPageOut(PageOut[ProductOut]):
    pass


# --- zones -----------------------------------------------------------------------------------


class MaintenanceWindowIn(_In):
    cron: Annotated[str, _text(100)] = Field(description="start, as five cron fields")
    duration_minutes: int
    timezone: ShortText = "UTC"


class ZoneIn(_In):
    name: Name
    criticality: Annotated[str, _text(16)] = "medium"
    parent: Name | None = None
    maintenance_window: MaintenanceWindowIn | None = None


class DutyIn(_In):
    org: Name | None = Field(description="the organization to hold the duty; null unassigns it")


class ZoneOut(_Out):
    id: int
    name: str
    criticality: str
    parent: str | None
    maintenance_window: dict[str, Any] | None
    responsibilities: dict[str, str] = Field(description="duty → organization, set on this zone")
    devices: int


class ZonePageOut(PageOut[ZoneOut]):
    pass


# --- organizations ---------------------------------------------------------------------------


class OrgIn(_In):
    name: Name
    kind: Annotated[str, _text(20)]
    brand: Label | None = Field(None, description="for a manufacturer: the brand it makes")
    contact_email: Annotated[str, _text(254)] | None = None


class OrgOut(_Out):
    id: int
    name: str
    kind: str
    brand: str | None
    contact_email: str | None
    created_at: datetime


class OrgPageOut(PageOut[OrgOut]):
    pass


# --- tokens ----------------------------------------------------------------------------------


class TokenIn(_In):
    org: Name | None = Field(None, description="defaults to the caller's organization")
    name: Name
    role: Annotated[str, _text(16)] = "viewer"
    expires_in: str | None = Field(
        None, max_length=16, description="lifetime such as 30d, 12h or 2w (default 90d; a partner's at most 365d)")
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="lifetime in days (or use expires_in)")
    no_expiry: bool = Field(False, description="never expires: a city administrator only, recorded in the audit log")


class TokenOut(_Out):
    id: str
    org: str
    name: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None = Field(description="null: never expires")
    revoked_at: datetime | None
    last_used_at: datetime | None
    expired: bool


class IssuedTokenOut(TokenOut):
    secret: str = Field(description="the bearer token; shown this once and never again")


class TokenPageOut(PageOut[TokenOut]):
    pass


# --- audit log -------------------------------------------------------------------------------


class AuditEventOut(_Out):
    seq: int
    at: datetime
    actor: str
    org_id: int | None
    action: str
    target_type: str
    target_id: str
    before: Any
    after: Any
    prev_hash: str
    hash: str


class AuditEventPageOut(BaseModel):
    """Newest first; pass `next_before_seq` back as `before_seq` for older events."""

    items: list[AuditEventOut]
    next_before_seq: int | None = None


class AuditAnchorCheckOut(_Out):
    """The chain as seen from the best signed anchor of the installation's anchors file."""

    status: Literal["ok", "none", "failed", "unchecked"] = Field(
        description="ok: the anchored event is there with its hash; none: no anchor yet; failed: `reason` "
        "(a cut tail, a rewrite, a forged anchor); unchecked: the chain itself is broken")
    source: str = Field(description="the anchors file read")
    anchors: int
    line: int | None
    seq: int | None = Field(description="the anchored event")
    head: str | None = Field(description="its hash when anchored")
    at: str | None = Field(description="when it was anchored (ISO 8601, UTC)")
    key: str | None = Field(description="id of the key that signed it")
    reason: str | None


class AuditChainOut(_Out):
    ok: bool = Field(description="the chain holds and so does its latest anchor")
    events: int
    head: str
    first_broken: int | None
    reason: str | None
    anchor: AuditAnchorCheckOut | None = None
