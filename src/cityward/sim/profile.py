"""City profiles: the YAML file that sets a simulated city's mix, security posture, faults and timing.

A profile is data, not code, so a test or a demo can describe another city without touching
Python. Loading validates every field and names the file and the field in its error, because a
profile is hand-written. The bundled default is `profiles/port-aurelia.yaml`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PROFILE = Path(__file__).with_name("profiles") / "port-aurelia.yaml"
SCHEMES = ("semver", "dotted", "vendor")
FAULTS = ("offline", "flaky", "slow", "upgrade_fails", "upgrade_bricks")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class KindSpec:
    name: str
    weight: float
    id_prefix: str
    mqtt: float  # chance the inventory sheet says mqtt
    http: float  # chance it says http (the rest: no protocol)


@dataclass(frozen=True)
class ProductSpec:
    brand: str
    model: str
    kind: str
    origin: tuple[str, str] | None
    scheme: str
    share: float
    end_of_support: int | None  # a year, or None while supported
    hardware: tuple[str, ...]
    rollback: bool
    default_password: str


@dataclass(frozen=True)
class Timing:
    state_interval: float
    command_delay: float
    upgrade_duration: float
    reboot: float
    slow_factor: float
    flaky_up: tuple[float, float]
    flaky_down: tuple[float, float]


@dataclass(frozen=True)
class Profile:
    name: str
    source: str  # the file it came from, for messages
    devices: int
    kinds: tuple[KindSpec, ...]
    products: tuple[ProductSpec, ...]
    release_decay: float
    default_credentials: float
    weak_credentials: float
    weak_passwords: tuple[str, ...]
    services: tuple[tuple[str, float], ...]
    cert_none: float
    cert_expired: float
    cert_expiring: float
    remote_access: tuple[tuple[str, float], ...]
    faults: tuple[tuple[str, float], ...]  # in FAULTS order
    timing: Timing
    _index: dict[tuple[str, str], ProductSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {(p.brand, p.model): p for p in self.products})

    def kind(self, name: str) -> KindSpec | None:
        return next((k for k in self.kinds if k.name == name), None)

    def product(self, brand: str, model: str) -> ProductSpec | None:
        return self._index.get((brand, model))

    def root(self, brand: str, model: str) -> tuple[str, str]:
        """The true manufacturer's product at the end of a relabel chain."""
        key = (brand, model)
        seen = {key}
        while (p := self.product(*key)) is not None and p.origin is not None and p.origin not in seen:
            seen.add(p.origin)
            key = p.origin
        return key

    def fault_share(self, name: str) -> float:
        return dict(self.faults)[name]


class _Reader:
    """Typed field access that raises ProfileError naming `file: dotted.field`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ProfileError:
        return ProfileError(f"{self.source}: {where}: {message}")

    def mapping(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.fail(where, "must be a mapping")
        return value

    def text(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "must be a non-empty string")
        return value

    def number(self, value: object, where: str, low: float = 0.0, high: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, "must be a number")
        if value < low or (high is not None and value > high):
            bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            raise self.fail(where, f"must be {bound}")
        return float(value)

    def share(self, value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise self.fail(where, "must be a share between 0 and 1")
        return float(value)

    def integer(self, value: object, where: str, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(where, f"must be an integer >= {low}")
        return value

    def strings(self, value: object, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, "must be a non-empty list of strings")
        return tuple(self.text(v if not isinstance(v, int | float) else str(v), f"{where}[{i}]")
                     for i, v in enumerate(value))

    def shares(self, value: object, where: str) -> tuple[tuple[str, float], ...]:
        return tuple((k, self.share(v, f"{where}.{k}")) for k, v in self.mapping(value, where).items())

    def range(self, value: object, where: str) -> tuple[float, float]:
        if not isinstance(value, list) or len(value) != 2:
            raise self.fail(where, "must be a list [min, max]")
        low, high = (self.number(v, f"{where}[{i}]") for i, v in enumerate(value))
        if low > high:
            raise self.fail(where, "min must not exceed max")
        return low, high


def load_profile(path: Path | str | None = None) -> Profile:
    """Read and validate a profile (None: the bundled default)."""
    return _default() if path is None else _load(Path(path))


@functools.lru_cache(maxsize=1)
def _default() -> Profile:
    return _load(DEFAULT_PROFILE)


def _load(file: Path) -> Profile:
    source = file.name
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        raise ProfileError(f"{source}: {where}: not valid YAML") from None
    return parse_profile(data, source)


def parse_profile(data: object, source: str = "profile") -> Profile:
    """Validate an already-parsed profile document."""
    r = _Reader(source)
    top = r.mapping(data, "(top level)")
    known = {"name", "devices", "kinds", "products", "firmware", "credentials", "services",
             "certificates", "remote_access", "faults", "timing"}
    for key in top:
        if key not in known:
            raise r.fail(key, "unknown field")

    def section(name: str) -> dict[str, Any]:
        if name not in top:
            raise r.fail(name, "is required")
        return r.mapping(top[name], name)

    kinds = []
    for name, spec in section("kinds").items():
        where = f"kinds.{name}"
        s = r.mapping(spec, where)
        mqtt = r.share(s.get("mqtt", 0.0), f"{where}.mqtt")
        http = r.share(s.get("http", 0.0), f"{where}.http")
        if mqtt + http > 1.0 + 1e-9:
            raise r.fail(where, "mqtt + http must not exceed 1")
        prefix = r.text(s.get("id_prefix"), f"{where}.id_prefix")
        if not prefix.isalnum():
            raise r.fail(f"{where}.id_prefix", "must be letters and digits")
        kinds.append(KindSpec(name, r.number(s.get("weight"), f"{where}.weight"), prefix, mqtt, http))
    if not kinds or sum(k.weight for k in kinds) <= 0:
        raise r.fail("kinds", "needs at least one kind with a positive weight")

    raw_products = top.get("products")
    if not isinstance(raw_products, list) or not raw_products:
        raise r.fail("products", "must be a non-empty list")
    products: dict[tuple[str, str], ProductSpec] = {}
    kind_names = {k.name for k in kinds}
    for i, item in enumerate(raw_products):
        where = f"products[{i}]"
        p = r.mapping(item, where)
        brand, model = r.text(p.get("brand"), f"{where}.brand"), r.text(p.get("model"), f"{where}.model")
        where = f"products[{i}] ({brand} {model})"
        if (brand, model) in products:
            raise r.fail(where, "listed twice")
        kind = r.text(p.get("kind"), f"{where}.kind")
        if kind not in kind_names:
            raise r.fail(f"{where}.kind", f"{kind!r} is not one of kinds")
        origin: tuple[str, str] | None = None
        upstream: ProductSpec | None = None
        if p.get("origin") is not None:
            o = p["origin"]
            if not isinstance(o, list) or len(o) != 2 or not all(isinstance(x, str) for x in o):
                raise r.fail(f"{where}.origin", "must be [brand, model]")
            origin = (o[0], o[1])
            upstream = products.get(origin)
            if upstream is None:
                raise r.fail(f"{where}.origin", f"{o[0]} {o[1]} must be listed before it")
            if upstream.kind != kind:
                raise r.fail(f"{where}.origin", "must be a product of the same kind")
        scheme = r.text(p.get("scheme", upstream.scheme if upstream else None), f"{where}.scheme")
        if scheme not in SCHEMES:
            raise r.fail(f"{where}.scheme", f"must be one of {', '.join(SCHEMES)}")
        eos = p.get("end_of_support")
        if eos is not None:
            eos = r.integer(eos, f"{where}.end_of_support", 1970)
        rollback = p.get("rollback", upstream.rollback if upstream else False)
        if not isinstance(rollback, bool):
            raise r.fail(f"{where}.rollback", "must be true or false")
        password = p.get("default_password", upstream.default_password if upstream else None)
        if isinstance(password, int):
            password = str(password)
        products[(brand, model)] = ProductSpec(
            brand=brand, model=model, kind=kind, origin=origin, scheme=scheme,
            share=r.number(p.get("share", 1.0), f"{where}.share"), end_of_support=eos,
            hardware=r.strings(p.get("hardware", ["1"]), f"{where}.hardware"), rollback=rollback,
            default_password=r.text(password, f"{where}.default_password"),
        )
    for k in kinds:
        if not any(p.kind == k.name for p in products.values()):
            raise r.fail(f"kinds.{k.name}", "has no product")

    firmware = section("firmware")
    decay = r.number(firmware.get("release_decay", 0.7), "firmware.release_decay", 0.01, 1.0)

    creds = section("credentials")
    default = r.share(creds.get("default", 0.0), "credentials.default")
    weak = r.share(creds.get("weak", 0.0), "credentials.weak")
    if default + weak > 1.0 + 1e-9:
        raise r.fail("credentials", "default + weak must not exceed 1")
    weak_passwords = r.strings(creds.get("weak_passwords", ["password"]), "credentials.weak_passwords")

    certs = section("certificates")
    cert = [r.share(certs.get(k, 0.0), f"certificates.{k}") for k in ("none", "expired", "expiring_30d")]
    if sum(cert) > 1.0 + 1e-9:
        raise r.fail("certificates", "the shares must sum to at most 1")

    faults_map = section("faults")
    for key in faults_map:
        if key not in FAULTS:
            raise r.fail(f"faults.{key}", f"unknown fault (known: {', '.join(FAULTS)})")
    faults = tuple((f, r.share(faults_map.get(f, 0.0), f"faults.{f}")) for f in FAULTS)
    if sum(s for _f, s in faults) > 1.0 + 1e-9:
        raise r.fail("faults", "the shares must sum to at most 1 (a device has at most one fault)")

    t = section("timing")
    timing = Timing(
        state_interval=r.number(t.get("state_interval", 300), "timing.state_interval", 0.01),
        command_delay=r.number(t.get("command_delay", 0.5), "timing.command_delay"),
        upgrade_duration=r.number(t.get("upgrade_duration", 90), "timing.upgrade_duration"),
        reboot=r.number(t.get("reboot", 8), "timing.reboot"),
        slow_factor=r.number(t.get("slow_factor", 5), "timing.slow_factor", 1.0),
        flaky_up=r.range(t.get("flaky_up", [120, 900]), "timing.flaky_up"),
        flaky_down=r.range(t.get("flaky_down", [5, 60]), "timing.flaky_down"),
    )
    return Profile(
        name=r.text(top.get("name", source), "name"), source=source,
        devices=r.integer(top.get("devices", 2000), "devices"),
        kinds=tuple(kinds), products=tuple(products.values()), release_decay=decay,
        default_credentials=default, weak_credentials=weak, weak_passwords=weak_passwords,
        services=r.shares(section("services"), "services"),
        cert_none=cert[0], cert_expired=cert[1], cert_expiring=cert[2],
        remote_access=r.shares(section("remote_access"), "remote_access"),
        faults=faults, timing=timing,
    )


__all__ = ["DEFAULT_PROFILE", "KindSpec", "ProductSpec", "Profile", "ProfileError", "Timing", "load_profile",
           "parse_profile"]
