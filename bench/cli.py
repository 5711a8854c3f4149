"""Benchmark: the CPU a `cityward` command costs before and around its work (issue 14, point 8).

    .venv/bin/python bench/cli.py                      # demo city of 2,000 devices, 5 runs each
    .venv/bin/python bench/cli.py --devices 20000 --runs 9

Builds a demo database in a temporary folder (`cityward demo --once --no-live --devices N`), then
runs each command `--runs` times, its output to a pipe, and takes the CPU time (user + system) of
the child process from `getrusage(RUSAGE_CHILDREN)`:

- `python -c pass`: the interpreter alone, the floor everything else stands on;
- `cityward --version` and `cityward --help`: goal 0.3 s;
- `cityward devices list --limit 20`, a read command on the demo database: goal 1 s.

Twice: *warm*, with Python's bytecode cache (as after the first run on any normal install; the
goals are judged here), and *cold*, with no cache at all: every module, the standard library's
included, compiled from source on every run (PYTHONDONTWRITEBYTECODE=1 and an empty cache), the
worst case of an environment that sets that variable and a venv installed without
`uv sync --compile-bytecode`. And *setup*: PYTHONDONTWRITEBYTECODE=1 with the bytecode that
`make setup` writes (`uv sync --compile-bytecode` and `compileall src`) — what a user of this
machine, where that variable is set, gets. The caches live in a temporary PYTHONPYCACHEPREFIX, so the benchmark
leaves .venv as it found it. A measurement, not a
test: nothing here asserts (tests/test_cli_output.py checks the imports deterministically).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

GOALS = {"--version": 0.3, "--help": 0.3, "devices list": 1.0}


def cityward() -> list[str]:
    script = Path(sys.executable).parent / "cityward"  # the console script a user runs
    return [str(script)] if script.exists() else [sys.executable, "-m", "cityward.entrypoints.cli.main"]


def cpu_of(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2000, help="devices in the demo city")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per command and mode")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cityward-bench-cli-") as tmp:
        home = Path(tmp)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CITYWARD_", "PYTHON"))}
        base["CITYWARD_DATABASE_URL"] = f"sqlite:///{home / 'cityward.db'}"
        warm = dict(base, PYTHONPYCACHEPREFIX=str(home / "pycache"))
        cold = dict(base, PYTHONPYCACHEPREFIX=str(home / "empty"), PYTHONDONTWRITEBYTECODE="1")
        installed = dict(base, PYTHONDONTWRITEBYTECODE="1")  # the bytecode `make setup` wrote, nothing more
        print(f"building the demo database ({args.devices:,} devices, --no-live)…", file=sys.stderr)
        subprocess.run([*cityward(), "demo", "--once", "--no-live", "--devices", str(args.devices)], cwd=home,
                       env=warm, check=True, stdout=subprocess.DEVNULL)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "cityward --version": [*cityward(), "--version"],
            "cityward --help": [*cityward(), "--help"],
            "cityward devices list --limit 20": [*cityward(), "devices", "list", "--limit", "20"],
        }
        rows = []
        for mode, env in (("warm", warm), ("setup", installed), ("cold", cold)):
            for label, cmd in commands.items():
                if mode == "warm":
                    cpu_of(cmd, home, env)  # fills the bytecode cache; not counted
                times = [cpu_of(cmd, home, env) for _ in range(args.runs)]
                goal = next((g for key, g in GOALS.items() if key in label), None)
                rows.append((label, mode, min(times), statistics.median(times), max(times), goal))

    print(f"\nCPU seconds (user + system) per run, {args.runs} runs each, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs\n")
    print(f"{'command':<36} {'mode':<6} {'min':>6} {'median':>7} {'max':>6} {'goal':>6}  verdict")
    for label, mode, low, mid, high, goal in rows:
        verdict = "" if goal is None else ("ok" if mid <= goal else "over")
        print(f"{label:<36} {mode:<6} {low:>6.3f} {mid:>7.3f} {high:>6.3f} "
              f"{'' if goal is None else f'{goal:.1f}':>6}  {verdict}")


if __name__ == "__main__":
    main()
