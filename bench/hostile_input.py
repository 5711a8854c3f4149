"""Benchmark: peak memory of the largest hostile inputs (issue 15, "bounded parsers everywhere").

    .venv/bin/python bench/hostile_input.py                 # every input, CLI and API
    .venv/bin/python bench/hostile_input.py --only cli      # or: api, sbom

Each input is built in bench/out/hostile/ (deterministic, rebuilt when missing) at the largest size
its reader accepts before the size limit, then fed:

- to the CLI: `cityward <command> FILE` in a fresh child process on a fresh SQLite city. Its peak
  RSS is the child's `ru_maxrss` (os.wait4); the baseline is the same command on a small valid
  file, so "over baseline" is what the hostile input itself cost;
- to the API: one `cityward serve --no-executor` process on its own SQLite city and a free port,
  warmed up with a small valid request of each kind; after each hostile request its VmHWM (peak
  RSS, /proc) is read, and the figure is the peak over the RSS after warm-up, plus the RSS left
  once the answer is sent (the old reader stayed at 3 GB after answering);
- CycloneDX SBOMs (JSON and XML) to `domain.cyclonedx.parse_sbom` in a child process (the CLI's
  `sbom import` needs a signed firmware release; the parser is what reads the file).

It prints the exit code or HTTP status, the first words of the message, the time and the memory.
A measurement, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import status_kb

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "hostile"
CLI = [sys.executable, "-m", "cityward.entrypoints.cli.main"]
MIB = 1 << 20


# --- the inputs --------------------------------------------------------------------------------

def _nested(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _cve(description: str) -> bytes:
    return json.dumps({
        "dataType": "CVE_RECORD", "dataVersion": "5.1",
        "cveMetadata": {"cveId": "CVE-2026-99999", "state": "PUBLISHED", "assignerShortName": "bench",
                        "datePublished": "2026-01-01T00:00:00Z"},
        "containers": {"cna": {"title": "bench", "descriptions": [{"lang": "en", "value": description}],
                               "affected": [{"vendor": "Acme", "product": "Cam", "defaultStatus": "affected"}]}},
    }).encode()


def _epss(field: bytes) -> bytes:
    return b"cve,epss,percentile\nCVE-2024-0001,0.1,0.2\nCVE-2024-0002,\"" + field + b"\",0.5\n"


# name -> (builder, kind): kind says which command reads it
INPUTS: dict[str, tuple[Callable[[], bytes], str]] = {
    # inventory (CLI `devices import`, API POST /devices/import): the 6 GB case, then 64 MiB of it
    "devices-nested-100k.json": (lambda: _nested(50_000), "devices"),
    "devices-nested-64m.json": (lambda: _nested(32 * MIB), "devices"),
    "devices-csv-field-64m.csv": (lambda: b"id,kind,brand,model,firmware_version,zone\ncam-1,camera,Acme,C1,1.0,\""
                                  + b"x\n" * (32 * MIB) + b"\"\n", "devices"),
    # policies (CLI `policy validate`, API POST /policies/validate): the size limit is 1 MiB
    "policy-nested-1m.yaml": (lambda: b"rules: " + b"[" * (MIB - 16), "policy"),
    "policy-block-1m.yaml": (lambda: b"- " * (MIB // 2 - 8) + b"x", "policy"),
    "policy-aliases-1m.yaml": (lambda: b"a: &a [x, x]\n" + b"".join(
        b"b%d: &b%d [*a, *a, *a, *a]\n" % (i, i) for i in range(30_000)), "policy"),
    # advisories (CLI `advisories import`, API POST /advisories/import): the size limit is 64 MiB
    "epss-field-200k.csv.gz": (lambda: gzip.compress(_epss(b"9" * 200_000)), "advisories"),
    "epss-field-60m.csv": (lambda: _epss(b"9" * (60 * MIB)), "advisories"),
    "kev-field-60m.csv": (lambda: b"cveID,dateAdded\nCVE-2024-0001,\"" + b"x" * (60 * MIB) + b"\"\n", "advisories"),
    "cve-description-48m.json": (lambda: _cve("A" * (48 * MIB)), "advisories"),
    "advisory-nested-63m.json": (lambda: b'{"document": ' + _nested(31 * MIB) + b"}", "advisories"),
    "advisory-values-63m.json": (lambda: b'{"document": {"csaf_version": "2.0"}, "x": ['
                                 + b"[]," * (21 * MIB) + b"[]]}", "advisories"),
    # under every limit but the last: 62 MiB of short strings, 1.75 million of them, then refused
    # as not a document cityward knows (the costliest input that still gets parsed)
    "advisory-strings-62m.json": (lambda: b'{"x": [' + b",".join(
        [b'"' + b"\\u00e9" * 5 + b"z" * 4 + b'"'] * 1_750_000) + b"]}", "advisories"),
    # SBOMs (parse_sbom in a child process): the size limit is 50 MiB
    "sbom-nested-50m.xml": (lambda: b'<bom xmlns="http://cyclonedx.org/schema/bom/1.5">' + b"<a>" * (8 * MIB)
                            + b"</a>" * (4 * MIB), "sbom"),
    "sbom-elements-50m.xml": (lambda: b'<bom xmlns="http://cyclonedx.org/schema/bom/1.5">' + b"<a/>" * (12 * MIB)
                              + b"</bom>", "sbom"),
    "sbom-nested-50m.json": (lambda: b'{"bomFormat": "CycloneDX", "x": ' + _nested(24 * MIB) + b"}", "sbom"),
    "sbom-values-50m.json": (lambda: b'{"bomFormat": "CycloneDX", "specVersion": "1.5", "x": ['
                             + b"0," * (24 * MIB) + b"0]}", "sbom"),
}

SMALL_DEVICES = b"id,kind,brand,model,firmware_version,zone\ncam-1,camera,Acme,C1,1.0,Downtown\n"
SMALL_POLICY = (ROOT / "policies" / "baseline.yaml").read_bytes()
SMALL_EPSS = b"cve,epss,percentile\nCVE-2024-0001,0.1,0.2\n"


def build(name: str) -> Path:
    path = OUT / name
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        path.write_bytes(INPUTS[name][0]())
    return path


# --- the CLI -----------------------------------------------------------------------------------

def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWARD_")}
    env.update(CITYWARD_DATABASE_URL=f"sqlite:///{home / 'cityward.db'}", COLUMNS="200")
    return env


# The child reports its own VmHWM at exit: ru_maxrss of a child would include the RSS this process
# had when it forked (the pages are shared until exec), not only what the command itself used.
_CLI_CHILD = """
import atexit, sys
from pathlib import Path
def _report():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            Path({out!r}).write_text(line.split()[1])
atexit.register(_report)
sys.argv = ["cityward", *sys.argv[1:]]
from cityward.entrypoints.cli.main import main
main()
"""


def run_cli(home: Path, *args: str) -> tuple[int, str, float, int]:
    """(exit code, the message naming the limit, seconds, peak RSS in kB) of one CLI run."""
    hwm = home / "vmhwm.txt"
    hwm.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CLI_CHILD.format(out=str(hwm)), *args], cwd=home,
                          env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    secs = time.perf_counter() - started
    err = proc.stderr.decode("utf-8", "replace")
    # the line naming the limit, else the first; file paths shortened to their names
    lines = [" ".join(line.strip(" │┃").split()) for line in err.splitlines() if line.strip(" │┃━┏┓┗┛┡┩└┘─┬┴┼")]
    shown = next((line for line in lines if "over the limit" in line), lines[0] if lines else "")
    shown = shown.replace(str(OUT) + "/", "")
    return proc.returncode, shown[:110], secs, int(hwm.read_text()) if hwm.exists() else 0


def command(kind: str, path: Path) -> list[str]:
    return {"devices": ["devices", "import", "--create-missing", str(path)],
            "policy": ["policy", "validate", str(path)],
            "advisories": ["advisories", "import", str(path)]}[kind]


def bench_cli(names: list[str]) -> None:
    home = OUT / "cli-city"
    if home.exists():
        for f in home.iterdir():
            f.unlink()
    home.mkdir(parents=True, exist_ok=True)
    run_cli(home, "init", "--city", "Bench")
    small = {"devices": ("small.csv", SMALL_DEVICES), "policy": ("small.yaml", SMALL_POLICY),
             "advisories": ("small-epss.csv", SMALL_EPSS)}
    baseline: dict[str, int] = {}
    print(f"{'CLI input':<28} {'size':>8} {'exit':>4} {'s':>6} {'peak MB':>8} {'over base':>9}  message")
    for kind, (file, data) in small.items():
        (home / file).write_bytes(data)
        code, _msg, secs, peak = run_cli(home, *command(kind, home / file))
        baseline[kind] = peak
        print(f"{'(baseline) ' + kind:<28} {len(data) / MIB:>7.2f}M {code:>4} {secs:>6.1f} {peak / 1024:>8.0f} "
              f"{'':>9}  small valid file")
    for name in names:
        kind = INPUTS[name][1]
        path = build(name)
        code, msg, secs, peak = run_cli(home, *command(kind, path))
        print(f"{name:<28} {path.stat().st_size / MIB:>7.1f}M {code:>4} {secs:>6.1f} {peak / 1024:>8.0f} "
              f"{(peak - baseline[kind]) / 1024:>8.0f}M  {msg}")


# --- the API -----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(client: httpx.Client, kind: str, data: bytes) -> httpx.Response:
    if kind == "devices":
        fmt = "json" if data[:1] == b"[" else "csv"
        return client.post("/api/v1/devices/import", params={"format": fmt, "create_missing": "true"}, content=data)
    if kind == "policy":
        return client.post("/api/v1/policies/validate", json={"yaml": data.decode()})
    return client.post("/api/v1/advisories/import", params={"name": "upload"}, content=data,
                       headers={"Content-Type": "application/octet-stream"})


def bench_api(names: list[str]) -> None:
    home = OUT / "api-city"
    if home.exists():
        for f in home.iterdir():
            f.unlink()
    home.mkdir(parents=True, exist_ok=True)
    init = subprocess.run([*CLI, "init", "--city", "Bench"], cwd=home, env=_env(home), capture_output=True,
                          text=True, check=True)
    token = next(w for w in init.stdout.split() if w.startswith("cw_"))
    port = _free_port()
    server = subprocess.Popen([*CLI, "serve", "--no-executor", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=home, env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                              timeout=600)
        for _ in range(600):  # a loaded machine can take a minute to start it
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                if server.poll() is not None:
                    raise SystemExit(f"cityward serve exited with {server.returncode}") from None
            time.sleep(0.2)
        for kind, data in (("devices", SMALL_DEVICES), ("policy", SMALL_POLICY), ("advisories", SMALL_EPSS)):
            _request(client, kind, data)
        base = status_kb("VmRSS", server.pid)
        print(f"\nAPI server pid {server.pid}: RSS after warm-up {base / 1024:.0f} MB")
        print(f"{'API input':<28} {'size':>8} {'HTTP':>4} {'s':>6} {'peak over':>9} {'RSS after':>9}  detail")
        for name in names:
            kind = INPUTS[name][1]
            if kind == "sbom":
                continue
            data = build(name).read_bytes()
            if kind == "policy" and len(data) > MIB - 64:
                data = data[:MIB - 64]  # the JSON body around it must stay under the 1 MiB body cap
            started = time.perf_counter()
            response = _request(client, kind, data)
            secs = time.perf_counter() - started
            del data
            detail = response.json().get("detail", "") if response.status_code >= 400 else ""
            errors = response.json().get("errors") if response.status_code >= 400 else None
            if errors and "refused" in detail:
                detail = errors[0].get("message", detail)
            peak = status_kb("VmHWM", server.pid)
            print(f"{name:<28} {len(response.request.content) / MIB:>7.1f}M {response.status_code:>4} {secs:>6.1f} "
                  f"{(peak - base) / 1024:>8.0f}M {status_kb('VmRSS', server.pid) / 1024:>8.0f}M  "
                  f"{' '.join(detail.split())[:90]}")
    finally:
        server.terminate()
        server.wait(30)


# --- SBOMs -------------------------------------------------------------------------------------

_SBOM_CHILD = """
import sys, time
sys.path.insert(0, {bench!r})
from procstat import status_kb
from cityward.domain import cyclonedx
from cityward.errors import InvalidInput
data = open({path!r}, "rb").read()
base = status_kb("VmHWM")
started = time.perf_counter()
try:
    cyclonedx.parse_sbom(data, {name!r})
    message = "accepted"
except InvalidInput as exc:
    message = exc.message
print(status_kb("VmHWM") - base, round(time.perf_counter() - started, 1), " ".join(message.split())[:90])
"""


def bench_sbom(names: list[str]) -> None:
    print(f"\n{'SBOM input (parse_sbom)':<28} {'size':>8} {'s':>6} {'peak over':>9}  message "
          "(over: the peak above the process with the file read)")
    for name in names:
        if INPUTS[name][1] != "sbom":
            continue
        path = build(name)
        code = _SBOM_CHILD.format(bench=str(ROOT / "bench"), path=str(path), name=name)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        over, secs, message = out.split(" ", 2)
        print(f"{name:<28} {path.stat().st_size / MIB:>7.1f}M {float(secs):>6.1f} {int(over) / 1024:>8.0f}M  "
              f"{message.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["cli", "api", "sbom"], help="one part only")
    parser.add_argument("--inputs", help="comma-separated input names (default: all)")
    args = parser.parse_args()
    names = args.inputs.split(",") if args.inputs else list(INPUTS)
    cli_names = [n for n in names if INPUTS[n][1] != "sbom"]
    if args.only in (None, "cli"):
        bench_cli(cli_names)
    if args.only in (None, "api"):
        bench_api(cli_names)
    if args.only in (None, "sbom"):
        bench_sbom(names)


if __name__ == "__main__":
    main()
