"""The firmware catalog: manufacturers' signing keys and verified images.

An image enters only after the platform has checked its hash and its manufacturer's Ed25519
signature exactly as a device will (docs/protocol.md §4), against a key registered for that
manufacturer. Images are stored by SHA-256 and checked again before a rollout offers them, read in
chunks (an image is never held whole in memory to be checked). A stored file that no longer hashes
to its release's SHA-256 is `ImageChanged` ("image changed on disk"): rollouts offering it stop
(services/firmware_guard.py), and the executor's download server never sends it
(services/firmware_downloads.py).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from cityward.adapters.storage.models import FirmwareKeyRow, FirmwareReleaseRow, ProductRow
from cityward.adapters.storage.uow import UnitOfWorkFactory
from cityward.domain import firmware as fw
from cityward.domain.organizations import Caller, OrgKind, Role
from cityward.domain.products import product_key
from cityward.errors import Conflict, InvalidInput, NotFound, PermissionDenied, Problem

CHANGED_ON_DISK = "image changed on disk"  # what the actions of a rollout stopped by it say
READ_CHUNK = 1 << 20  # bytes hashed at a time


class ReleaseRefused(InvalidInput):
    """A catalog release that may not be offered to devices now. `reason` is what the remaining
    devices of a rollout offering it are failed with."""

    def __init__(self, message: str, *, release_id: int, sha256: str, reason: str,
                 problems: list[Problem] | None = None, hint: str | None = None) -> None:
        super().__init__(message, problems, hint=hint)
        self.release_id, self.sha256, self.reason = release_id, sha256, reason


class ImageChanged(ReleaseRefused):
    """The stored file is not the image the catalog verified: written to, truncated, replaced or
    deleted since (`found` says how it differs)."""

    def __init__(self, release_id: int, sha256: str, found: str, hint: str | None = None) -> None:
        super().__init__(f"firmware release {release_id}: the stored image no longer verifies: {CHANGED_ON_DISK} "
                         f"({found})", release_id=release_id, sha256=sha256, reason=f"{CHANGED_ON_DISK}: {found}",
                         hint=hint)
        self.found = found


@dataclass(frozen=True)
class FileStamp:
    """What identifies the file that was hashed. A write, truncation or replacement changes it (a
    user can set the modification time back, never the change time), so a file with the stamp it
    had when it hashed right needs no new hash; any other is hashed again before it is offered."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def hash_stream(fh: BinaryIO, size: int) -> tuple[str, int]:
    """SHA-256 of at most `size` bytes of `fh`, read in chunks; (hex digest, bytes read)."""
    digest, read = hashlib.sha256(), 0
    while read < size:
        data = fh.read(min(READ_CHUNK, size - read))
        if not data:
            break
        digest.update(data)
        read += len(data)
    return digest.hexdigest(), read


def difference(fh: BinaryIO, sha256: str, size: int) -> str | None:
    """How the open file differs from the image `sha256` of `size` bytes (None: it is that image)."""
    actual = os.fstat(fh.fileno()).st_size
    if actual != size:
        return f"it is {actual:,} bytes now, not {size:,}"
    digest, _read = hash_stream(fh, size)
    return None if digest == sha256 else f"its SHA-256 is now {digest}"


@dataclass(frozen=True)
class ReleaseView:
    id: int
    brand: str
    model: str
    version: str
    size: int
    sha256: str
    key_id: str
    notes: str | None
    has_sbom: bool
    uploaded_by: str


def _require_firmware_admin(caller: Caller, manufacturer: str) -> None:
    """The city's administrators, or the manufacturer itself for its own brand."""
    if caller.is_city_admin:
        return
    if (caller.org_kind is OrgKind.MANUFACTURER and caller.role is not Role.VIEWER and caller.brand
            and product_key(caller.brand, "")[0] == product_key(manufacturer, "")[0]):
        return
    raise PermissionDenied("only a city administrator, or the manufacturer for its own products, "
                           "may register firmware keys and images")


def register_key(uow_factory: UnitOfWorkFactory, caller: Caller, manufacturer: str, key_id: str,
                 public_key: str) -> str:
    """Register a manufacturer's signing key; returns its id."""
    problems = []
    if not manufacturer.strip():
        problems.append(Problem("is empty", field="manufacturer"))
    if not (0 < len(key_id) <= 100 and key_id.isprintable() and not key_id.isspace()):
        problems.append(Problem("must be 1 to 100 printable characters", field="key_id"))
    key, problem = fw.parse_public_key(public_key)
    if problem:
        problems.append(problem)
    if problems:
        raise InvalidInput("the firmware key was not registered", problems)
    assert key is not None
    _require_firmware_admin(caller, manufacturer)
    with uow_factory(write=True) as uow:
        if uow.session.get(FirmwareKeyRow, key_id) is not None:
            raise Conflict(f"a firmware key {key_id!r} is registered already")
        now = uow.clock()
        uow.session.add(FirmwareKeyRow(key_id=key_id, manufacturer=manufacturer.strip(),
                                       manufacturer_key=product_key(manufacturer, "")[0],
                                       public_key=fw.raw_public_key(key), added_by=caller.actor, added_at=now))
        uow.record(caller, "firmware.key_registered", "firmware_key", key_id,
                   after={"manufacturer": manufacturer.strip(), "public_key": fw.raw_public_key(key)})
        uow.commit()
    return key_id


@dataclass(frozen=True)
class KeyView:
    key_id: str
    manufacturer: str
    public_key: str
    added_by: str
    revoked: bool


def list_keys(uow_factory: UnitOfWorkFactory) -> list[KeyView]:
    with uow_factory() as uow:
        return [KeyView(k.key_id, k.manufacturer, k.public_key, k.added_by, k.revoked_at is not None)
                for k in uow.session.scalars(select(FirmwareKeyRow).order_by(FirmwareKeyRow.manufacturer_key,
                                                                             FirmwareKeyRow.key_id))]


def _public_key(row: FirmwareKeyRow) -> Ed25519PublicKey:
    key, _ = fw.parse_public_key(row.public_key)
    assert key is not None  # stored only after parsing
    return key


def add_release(uow_factory: UnitOfWorkFactory, caller: Caller, store: Path, *, brand: str, model: str,
                version: str, image: bytes, signature: str, key_id: str, notes: str | None = None,
                sbom: dict[str, Any] | None = None, source: str = "image") -> ReleaseView:
    """Verify and store one image for the true manufacturer's product `brand model`."""
    problems = [Problem("is empty", field=f) for f, v in (("brand", brand), ("model", model), ("version", version))
                if not v.strip()]
    if len(version) > 64:
        problems.append(Problem("is longer than 64 characters", field="version"))
    if problems:
        raise InvalidInput(f"{source}: the firmware was not added", problems)
    _require_firmware_admin(caller, brand)
    bkey, mkey = product_key(brand, model)
    with uow_factory() as uow:
        key_row = uow.session.get(FirmwareKeyRow, key_id)
        made = uow.session.scalar(select(ProductRow.id).where(  # the product, as its own maker
            ProductRow.brand_key == bkey, ProductRow.model_key == mkey, ProductRow.origin_brand_key == bkey).limit(1))
    if key_row is None or key_row.revoked_at is not None:
        raise InvalidInput(f"{source}: unknown or revoked firmware key {key_id!r}",
                           [Problem("register the manufacturer's key first: cityward firmware key add",
                                    field="key_id")])
    if key_row.manufacturer_key != bkey:
        raise InvalidInput(f"{source}: key {key_id!r} belongs to {key_row.manufacturer}, not {brand}",
                           [Problem("a manufacturer signs only its own products", field="key_id")])
    if made is None:
        raise InvalidInput(f"{source}: {brand} {model} is not a product in the catalog (as its own manufacturer)",
                           [Problem("add the product to the catalog first", field="model")])
    found = fw.verify_image(image, brand=brand, model=model, version=version, signature_b64=signature,
                            key=_public_key(key_row))
    if found:
        raise InvalidInput(f"{source}: the firmware was refused", found)
    digest = hashlib.sha256(image).hexdigest()
    _store_image(store, digest, image)
    with uow_factory(write=True) as uow:
        if uow.session.scalar(select(FirmwareReleaseRow.id).where(
                FirmwareReleaseRow.brand_key == bkey, FirmwareReleaseRow.model_key == mkey,
                FirmwareReleaseRow.version == version)) is not None:
            raise Conflict(f"{brand} {model} {version} is in the firmware catalog already")
        row = FirmwareReleaseRow(brand=brand.strip(), model=model.strip(), brand_key=bkey, model_key=mkey,
                                 version=version.strip(), size=len(image), sha256=digest, signature=signature.strip(),
                                 key_id=key_id, notes=notes, sbom=sbom, uploaded_by=caller.actor,
                                 uploaded_at=uow.clock())
        uow.session.add(row)
        uow.session.flush()
        uow.record(caller, "firmware.release_added", "firmware_release", row.id,
                   after={"product": f"{row.brand} {row.model}", "version": row.version, "sha256": digest,
                          "key_id": key_id, "size": len(image)})
        view = _view(row)
        uow.commit()
    return view


def _store_image(store: Path, digest: str, image: bytes) -> None:
    """Write once, atomically: a reader never sees half an image."""
    store.mkdir(parents=True, exist_ok=True)
    target = store / digest
    if target.exists():
        return
    fd, tmp = tempfile.mkstemp(dir=store, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(image)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _view(row: FirmwareReleaseRow) -> ReleaseView:
    return ReleaseView(row.id, row.brand, row.model, row.version, row.size, row.sha256, row.key_id, row.notes,
                       row.sbom is not None, row.uploaded_by)


def list_releases(uow_factory: UnitOfWorkFactory) -> list[ReleaseView]:
    with uow_factory() as uow:
        rows = uow.session.scalars(select(FirmwareReleaseRow).order_by(
            FirmwareReleaseRow.brand_key, FirmwareReleaseRow.model_key, FirmwareReleaseRow.id))
        return [_view(r) for r in rows]


def get_release(uow_factory: UnitOfWorkFactory, release_id: int) -> ReleaseView:
    with uow_factory() as uow:
        row = uow.session.get(FirmwareReleaseRow, release_id)
        if row is None:
            raise NotFound(f"firmware release {release_id} not found")
        return _view(row)


@dataclass(frozen=True)
class VerifiedImage:
    view: ReleaseView
    signature: str
    stamp: FileStamp  # the stored file as it was when it verified


def verified_image(uow_factory: UnitOfWorkFactory, store: Path, release_id: int, *,
                   unchanged: FileStamp | None = None) -> VerifiedImage:
    """The stored image, checked again (hash and signature) just before it is offered to devices:
    a file changed on disk since upload is refused (`ImageChanged`). A file still stamped
    `unchanged` (it verified with that stamp) is not hashed again; its signature is checked anyway."""
    with uow_factory() as uow:
        row = uow.session.get(FirmwareReleaseRow, release_id)
        if row is None:
            raise NotFound(f"firmware release {release_id} not found")
        key_row = uow.session.get(FirmwareKeyRow, row.key_id)
        view, signature = _view(row), row.signature
    if key_row is None or key_row.revoked_at is not None:
        raise ReleaseRefused(f"firmware release {release_id}: its signing key {view.key_id!r} has been revoked",
                             release_id=release_id, sha256=view.sha256,
                             reason=f"the signing key {view.key_id} of its firmware has been revoked")
    if not store.is_dir():  # this executor's configuration, not a change to the image
        raise InvalidInput(f"firmware release {release_id}: the firmware store {store} does not exist",
                           hint="set CITYWARD_FIRMWARE_DIR to where images were uploaded")
    try:
        with (store / view.sha256).open("rb") as fh:
            stamp = FileStamp.of(os.fstat(fh.fileno()))
            found = None if stamp == unchanged else difference(fh, view.sha256, view.size)
    except FileNotFoundError:
        raise ImageChanged(release_id, view.sha256, f"it is missing from {store}",
                           hint="restore it from the manufacturer's original (cityward firmware add)") from None
    except OSError as exc:
        raise InvalidInput(f"firmware release {release_id}: the image in {store} cannot be read ({exc.strerror})",
                           hint="CITYWARD_FIRMWARE_DIR must be readable by cityward") from None
    if found is not None:
        raise ImageChanged(release_id, view.sha256, found,
                           hint="restore it from the manufacturer's original, then plan a new rollout")
    problems = fw.verify_digest(view.sha256, view.size, brand=view.brand, model=view.model, version=view.version,
                                signature_b64=signature, key=_public_key(key_row))
    if problems:
        raise ReleaseRefused(f"firmware release {release_id}: the stored image no longer verifies", problems=problems,
                             release_id=release_id, sha256=view.sha256, reason=f"its firmware no longer verifies: "
                             f"{problems[0]}")
    return VerifiedImage(view, signature, stamp)


def signature_of(uow_factory: UnitOfWorkFactory, release_id: int) -> str:
    with uow_factory() as uow:
        row = uow.session.get(FirmwareReleaseRow, release_id)
        if row is None:
            raise NotFound(f"firmware release {release_id} not found")
        return row.signature
