"""Benchmark: the executor's firmware download server, hashing every download vs not hashing.

    .venv/bin/python bench/firmware_serve.py                       # 32 MiB image, 40 downloads, 10 at once
    .venv/bin/python bench/firmware_serve.py --size 8 --downloads 200 --concurrency 50

Three servers, each in its own process (uvicorn, as in the executor), serving one image from a
store on disk to a client in this process over loopback:

- `before`: what the executor served until issue 15 — Starlette's FileResponse, no hashing;
- `hashed`: services/firmware_downloads.DownloadServer with the image's stamp known (the steady
  state: the executor verified it when it built the commands), so each download is hashed once,
  as it is sent, its last chunk held back until the hash matched;
- `hashed64`: `hashed` reading 64 KiB at a time, as FileResponse does (the server's default is
  256 KiB), to tell the cost of hashing from the effect of the chunk size;
- `cold`: the same server with the stamp unknown for every download (worst case: the file looks
  touched each time), so each download is hashed in full before it starts, then again as it is sent.

It prints, per server: MB/s delivered (bytes received by the client / wall time), the server
process's CPU seconds per GB served (/proc/<pid>/stat), and its peak RSS. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import httpx
from procstat import status_kb  # bench/procstat.py: the script's folder is on sys.path

OUT = Path(__file__).parent / "out" / "firmware-serve"
KEY = b"bench-key-" * 4


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(mode: str, store: str, sha: str, ready: Any) -> None:
    """The server process: one uvicorn server until killed."""
    import uvicorn

    from cityward.services.firmware import FileStamp
    from cityward.services.firmware_downloads import DownloadServer, KnownGood

    app: Any
    if mode == "before":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import FileResponse, Response
        from starlette.routing import Route

        async def image(request: Request) -> Response:
            return FileResponse(Path(store) / request.path_params["sha256"], media_type="application/octet-stream")

        app = Starlette(routes=[Route("/firmware/{token}/{sha256}", image)])
    else:
        known = KnownGood()
        if mode in ("hashed", "hashed64"):
            known.set(sha, FileStamp.of(os.stat(Path(store) / sha)))
        else:
            class Forgetful(KnownGood):
                def get(self, sha256: str) -> FileStamp | None:
                    return None
            known = Forgetful()
        app = DownloadServer(Path(store), KEY, known)
        if mode == "hashed64":
            app.chunk = 64 * 1024

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        ready.put(server.servers[0].sockets[0].getsockname()[1])
        await task

    asyncio.run(main())


async def _download_all(url: str, downloads: int, concurrency: int, size: int) -> int:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)  # a device: one connection each
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def one() -> int:
            async with gate, client.stream("GET", url) as response:
                response.raise_for_status()
                got = 0
                async for chunk in response.aiter_raw():
                    got += len(chunk)
                assert got == size, (got, size)
                return got
        return sum(await asyncio.gather(*(one() for _ in range(downloads))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32, help="image size in MiB (default 32)")
    parser.add_argument("--downloads", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--modes", default="before,hashed,hashed64,cold")
    args = parser.parse_args()

    from cityward.services.firmware_downloads import firmware_token

    OUT.mkdir(parents=True, exist_ok=True)
    image = hashlib.sha256(b"bench").digest() * (args.size * (1 << 20) // 32)
    sha = hashlib.sha256(image).hexdigest()
    for old in OUT.iterdir():
        if old.name != sha:
            old.unlink()
    (OUT / sha).write_bytes(image)
    print(f"image {len(image):,} bytes, {args.downloads} downloads, {args.concurrency} at once, "
          f"{os.cpu_count()} CPUs")
    print(f"{'server':<8} {'seconds':>8} {'MB/s':>8} {'server CPU s/GB':>16} {'server peak RSS':>16}")
    ctx = multiprocessing.get_context("spawn")
    for mode in args.modes.split(","):
        ready = ctx.Queue()
        proc = ctx.Process(target=_serve, args=(mode, str(OUT), sha, ready), daemon=True)
        proc.start()
        try:
            port = ready.get(timeout=30)
            assert proc.pid is not None
            url = f"http://127.0.0.1:{port}/firmware/{firmware_token(KEY, sha)}/{sha}"
            asyncio.run(_download_all(url, 2, 2, len(image)))  # warm: page cache, imports, connections
            cpu, start = _cpu_seconds(proc.pid), time.perf_counter()
            total = asyncio.run(_download_all(url, args.downloads, args.concurrency, len(image)))
            wall = time.perf_counter() - start
            cpu = _cpu_seconds(proc.pid) - cpu
            rss = status_kb("VmHWM", proc.pid) / 1024
            print(f"{mode:<8} {wall:>8.2f} {total / wall / 1e6:>8.0f} {cpu / (total / 1e9):>16.2f} "
                  f"{rss:>13.0f} MB")
        finally:
            proc.kill()
            proc.join()


if __name__ == "__main__":
    main()
