"""Small builders shared by tests."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import func, select

from cityward.adapters.inventory_files import FileFormat
from cityward.adapters.storage.models import AuditEventRow, DeviceRow
from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller
from cityward.services import inventory
from cityward.services.ingestion import Ingestor
from cityward.services.inventory import ImportReport

HEADER = ["id", "kind", "brand", "model", "firmware_version", "zone", "serial", "mac", "maintainer"]


def csv_bytes(rows: Iterable[Mapping[str, object]], header: list[str] | None = None) -> bytes:
    rows = list(rows)
    header = header or HEADER
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in header})
    return buf.getvalue().encode()


def device(i: int, **over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": f"SL-{i:05d}", "kind": "streetlight", "brand": "Lumo", "model": "L100",
        "firmware_version": "1.2.3", "zone": "downtown", "serial": f"S{i}",
        "mac": f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", "maintainer": "",
    }
    row.update(over)
    return row


def import_csv(platform: Platform, caller: Caller, data: bytes, **kw: object) -> ImportReport:
    return inventory.import_devices(platform.uow, caller, io.BytesIO(data), "fleet.csv",
                                    FileFormat.CSV, **kw)  # type: ignore[arg-type]


def state(platform: Platform) -> tuple[int, int]:
    """(devices, audit events): what must not move when an import is refused."""
    with platform.uow() as uow:
        return (uow.session.scalar(select(func.count()).select_from(DeviceRow)) or 0,
                uow.session.scalar(select(func.count()).select_from(AuditEventRow)) or 0)


def ingest(platform: Platform, topic: str, payload: bytes) -> None:
    """One device message through the real ingestor, written before returning."""
    async def go() -> None:
        ing = Ingestor(platform.uow, max_delay=0.01)
        stop = asyncio.Event()
        task = asyncio.create_task(ing.run(stop))
        ing.offer(topic, payload)
        await ing.flush()
        stop.set()
        await task
    asyncio.run(go())


def announce(platform: Platform, hello: Mapping[str, object]) -> None:
    """A device's `hello`, as it would announce itself."""
    ingest(platform, f"cityward/v1/{hello['device_id']}/hello", json.dumps(hello).encode())


async def eventually(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll `predicate` (run in a thread: it may query the database) until it holds, or fail
    naming what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def webhook_server(posts: list[tuple[dict[str, str], bytes]]) -> ThreadingHTTPServer:
    """A webhook receiver on a real socket (127.0.0.1, a free port) that keeps every POST's headers
    and body in `posts` and answers 204; the caller shuts it down."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            posts.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server
