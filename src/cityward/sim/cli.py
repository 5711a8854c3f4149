"""Command line of the simulated city: `sim run`, `sim keys`, `sim inventory`, `sim firmware`,
`sim advisories`.

`sim_app` is a Typer app the platform CLI mounts as `cityward sim`; `python -m cityward.sim` runs it
standalone. Errors are one line on stderr and exit code 2, never a traceback, because an
orchestrator reads this output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cityward.sim.city import (
    generate_city,
    product_releases,
    write_catalog_csv,
    write_inventory_csv,
    write_orgs_csv,
)
from cityward.sim.keys import export_keys, sign_firmware
from cityward.sim.profile import Profile, ProfileError, load_profile

sim_app = typer.Typer(help="The simulated city: thousands of devices speaking the cityward device protocol.",
                      no_args_is_help=True, add_completion=False)

ProfileOpt = Annotated[Path | None, typer.Option("--profile", help="City profile YAML (default: Port Aurelia).")]
SeedOpt = Annotated[int, typer.Option(help="Seed: same seed, same devices and behaviours.")]
DevicesOpt = Annotated[int | None, typer.Option("--devices", help="Number of devices (default: the profile's).")]
PrefixOpt = Annotated[str, typer.Option(
    "--id-prefix", help="Prepended to every device id (isolates simulators sharing a broker; moves HTTP addresses).")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _profile(path: Path | None) -> Profile:
    try:
        return load_profile(path)
    except ProfileError as exc:
        raise _fail(str(exc)) from None


def _ids(text: str | None) -> frozenset[str] | None:
    if not text:
        return None
    return frozenset(part.strip() for part in text.split(",") if part.strip())


@sim_app.command()
def run(
    profile: ProfileOpt = None,
    devices: DevicesOpt = None,
    seed: SeedOpt = 7,
    mqtt_url: Annotated[str | None, typer.Option(
        "--mqtt-url", help="Broker, mqtt://host:port (default: the bundle's, else mqtt://127.0.0.1:1883).")] = None,
    credentials: Annotated[Path | None, typer.Option(
        "--credentials", help="Broker credentials bundle (protocol §5); anonymous without it.")] = None,
    mode: Annotated[str, typer.Option(help="direct (one connection per device) or gateway.")] = "direct",
    http: Annotated[bool, typer.Option("--http/--no-http", help="Serve the HTTP devices.")] = True,
    state_interval: Annotated[float | None, typer.Option(
        "--state-interval", help="Seconds between periodic state messages (default: the profile's).")] = None,
    rate: Annotated[float, typer.Option(help="Extra state messages per second in total (benchmarks).")] = 0.0,
    time_scale: Annotated[float, typer.Option(
        "--time-scale", help="Multiplies every profile duration (upgrade, reboot, delays, flaky periods).")] = 1.0,
    handover: Annotated[Path | None, typer.Option(
        "--handover", help="Write the HTTP devices' admin passwords here (CSV, mode 0600).")] = None,
    control: Annotated[str, typer.Option(help="HOST:PORT of the sim-only control API (port 0: any).")] = (
        "127.0.0.1:0"),
    only: Annotated[str | None, typer.Option(help="Play only these device ids (comma-separated).")] = None,
    kinds: Annotated[str | None, typer.Option(help="Play only these kinds (comma-separated).")] = None,
    id_prefix: PrefixOpt = "",
    connect_concurrency: Annotated[int, typer.Option(
        "--connect-concurrency", help="MQTT connections opened at the same time.")] = 100,
) -> None:
    """Play the city's devices until SIGTERM/SIGINT; prints `READY ...` once every device is up."""
    from cityward.sim.runner import Options, SimError, run_sim  # the device stacks load only to run

    prof = _profile(profile)
    if mode not in ("direct", "gateway"):
        raise _fail("--mode must be direct or gateway")
    if (devices is not None and devices < 0) or rate < 0 or time_scale < 0 or connect_concurrency < 1:
        raise _fail("--devices, --rate and --time-scale must not be negative, --connect-concurrency >= 1")
    if state_interval is not None and state_interval <= 0:
        raise _fail("--state-interval must be positive")
    known_kinds = {k.name for k in prof.kinds}
    kind_set = _ids(kinds)
    if kind_set is not None and not kind_set <= known_kinds:
        unknown = sorted(kind_set - known_kinds)[0]
        raise _fail(f"--kinds: unknown kind {unknown} (known: {', '.join(sorted(known_kinds))})")
    options = Options(
        profile=prof, devices=devices if devices is not None else prof.devices, seed=seed, mqtt_url=mqtt_url,
        credentials=credentials, mode=mode, http=http, state_interval=state_interval, rate=rate,
        time_scale=time_scale, handover=handover, control=control, only=_ids(only), kinds=kind_set,
        id_prefix=id_prefix, connect_concurrency=connect_concurrency, announce=_announce,
    )
    try:
        run_sim(options)
    except SimError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


def _announce(line: str) -> None:
    """The READY line is plain text for orchestrators; a person at a terminal also gets a summary."""
    print(line, flush=True)
    if sys.stdout.isatty():
        from rich.console import Console

        fields = dict(part.split("=", 1) for part in line.split()[1:])
        Console(stderr=True).print(
            f"[bold green]ready[/]: {fields['devices']} devices ({fields['mqtt']} on MQTT, {fields['http']} on HTTP); "
            f"control API at {fields['control']}; Ctrl-C to stop")


@sim_app.command()
def keys(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the keys into.")],
    seed: SeedOpt = 7,
    profile: ProfileOpt = None,
    public_only: Annotated[bool, typer.Option("--public-only", help="Do not write private keys.")] = False,
) -> None:
    """Export the manufacturers' SIMULATION-ONLY firmware-signing keys (derived from the seed)."""
    prof = _profile(profile)
    makers = sorted({prof.root(p.brand, p.model)[0] for p in prof.products})
    try:
        written = export_keys(out, makers, seed, private=not public_only)
    except OSError as exc:
        raise _fail(f"{out}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {len(written)} files for {len(makers)} manufacturers to {out}")


@sim_app.command()
def inventory(
    out: Annotated[Path, typer.Option("--out", help="Directory for devices.csv, catalog.csv and organizations.csv.")],
    devices: DevicesOpt = None,
    seed: SeedOpt = 7,
    profile: ProfileOpt = None,
    id_prefix: PrefixOpt = "",
) -> None:
    """Write the inventory and catalog files of exactly the devices `run` plays with the same options."""
    prof = _profile(profile)
    city = generate_city(devices if devices is not None else prof.devices, seed, prof)
    try:
        out.mkdir(parents=True, exist_ok=True)
        rows = write_inventory_csv(city, out / "devices.csv", seed, id_prefix=id_prefix)
        products = write_catalog_csv(city, out / "catalog.csv")
        orgs = write_orgs_csv(city, out / "organizations.csv")
    except OSError as exc:
        raise _fail(f"{out}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {rows} devices, {products} products and {orgs} organizations to {out}")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in text).strip("-")


def _sbom(brand: str, model: str, version: str, sha256: str) -> dict[str, object]:
    """A small CycloneDX 1.5 SBOM of the image: the components a camera or light controller runs."""
    parts = [("busybox", "1.36.1", "pkg:generic/busybox@1.36.1"),
             ("openssl", "3.0.13", "pkg:generic/openssl@3.0.13"),
             ("mosquitto-client", "2.0.18", "pkg:generic/mosquitto@2.0.18"),
             ("zlib", "1.3.1", "pkg:generic/zlib@1.3.1")]
    return {
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "metadata": {"component": {"type": "firmware", "name": f"{brand} {model}", "version": version,
                                   "hashes": [{"alg": "SHA-256", "content": sha256}]}},
        "components": [{"type": "library", "name": n, "version": v, "purl": purl} for n, v, purl in parts],
    }


@sim_app.command()
def firmware(
    out: Annotated[Path, typer.Option("--out", help="Directory for the image, its signature and its SBOM.")],
    brand: Annotated[str, typer.Option(help="The true manufacturer's brand (the end of the relabel chain).")],
    model: Annotated[str, typer.Option(help="The true manufacturer's model.")],
    version: Annotated[str | None, typer.Option(help="The release (default: the product's newest).")] = None,
    seed: SeedOpt = 7,
    profile: ProfileOpt = None,
) -> None:
    """Play the manufacturer: a firmware image signed with its SIMULATION-ONLY key, with its SBOM."""
    prof = _profile(profile)
    if prof.product(brand, model) is None or prof.root(brand, model) != (brand, model):
        makers = sorted({f"{p.brand} {p.model}" for p in prof.products if prof.root(p.brand, p.model) ==
                         (p.brand, p.model)})
        raise _fail(f"--brand/--model: {brand} {model} is not a manufacturer's own product "
                    f"(one of: {', '.join(makers)})")
    releases = product_releases(prof, brand, model)
    version = version or releases[-1]
    image = f"cityward simulated firmware\n{brand}\n{model}\n{version}\n".encode() * 512
    sha256, signature, kid = sign_firmware(brand, model, version, image, seed)
    stem = f"{_slug(model)}-{_slug(version)}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.bin").write_bytes(image)
        (out / f"{stem}.sig").write_text(signature + "\n", encoding="ascii")
        (out / f"{stem}.cdx.json").write_text(
            json.dumps(_sbom(brand, model, version, sha256), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise _fail(f"{out}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {out / stem}.bin (sha256 {sha256}), {stem}.sig (signed with key {kid}) and {stem}.cdx.json")


@sim_app.command()
def advisories(
    out: Annotated[Path, typer.Option("--out", help="Directory for the CSAF, CVE, KEV and EPSS files.")],
    profile: ProfileOpt = None,
) -> None:
    """Write the manufacturers' (fictional) advisories about the city's products, with KEV and EPSS files."""
    from cityward.sim.advisories import write_advisories  # cvss loads only here

    prof = _profile(profile)
    try:
        folder = write_advisories(prof, out)
    except OSError as exc:
        raise _fail(f"{out}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {sum(1 for p in folder.iterdir() if p.is_file())} files to {folder}")


def main() -> None:
    sim_app(prog_name="cityward-sim")


__all__ = ["main", "sim_app"]
