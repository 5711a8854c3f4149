"""Memory figures of a process, from /proc/<pid>/status (Linux), shared by the benchmarks."""

from __future__ import annotations

from pathlib import Path


def status_kb(field: str, pid: int | str = "self") -> int:
    """A field in kB: VmRSS (resident now) or VmHWM (resident peak); 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
