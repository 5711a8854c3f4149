"""The executor's firmware download server: a device is only ever sent bytes that hash to its
release's SHA-256.

The catalog's files are content-addressed (one file per SHA-256, written once), but a file can
still be written to, truncated or replaced behind cityward's back. So every download is checked,
from the one open file it is sent from, in chunks (an image is never held whole in memory):

- **Before anything is sent**, a file whose stamp (size, inode, modification and change times:
  `firmware.FileStamp`) is not the one it last hashed right with is hashed in full; if it differs
  the download is refused (409, "image changed on disk"), no byte of it sent.
- **While it is sent**, the bytes are hashed as they go out, and the last chunk is held back until
  the whole file has hashed right: a file changed during the transfer is cut off before its end
  (the connection closes short of its Content-Length), so no device ever holds a complete image
  the catalog did not verify.

Either way `on_changed(sha256, found)` tells the executor, which stops the rollouts offering that
image and alerts the city (services/firmware_guard.py). The path carries a per-image token (an HMAC
under the city's key), so only devices told the URL can fetch an image.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from cityward.services.firmware import CHANGED_ON_DISK, FileStamp, hash_stream

log = logging.getLogger("cityward.firmware")
CHUNK = 256 * 1024  # bytes read, hashed and sent at a time: two of them per download in memory
_HEX = frozenset("0123456789abcdef")


def firmware_token(key: bytes, sha256: str) -> str:
    """An unguessable download path per image: only devices told the URL can fetch it."""
    return hmac.new(key, f"firmware-download/{sha256}".encode(), hashlib.sha256).hexdigest()[:32]


class ImageMismatch(Exception):
    """The bytes read from a stored image are not the image its name (its SHA-256) says."""

    def __init__(self, sha256: str, found: str) -> None:
        super().__init__(f"{sha256}: {CHANGED_ON_DISK}: {found}")
        self.sha256, self.found = sha256, found


class KnownGood:
    """The stamp each stored image had when it last hashed right, shared by the download server
    and the executor's own checks (thread-safe: commands are built in worker threads)."""

    def __init__(self) -> None:
        self._stamps: dict[str, FileStamp] = {}
        self._lock = threading.Lock()

    def get(self, sha256: str) -> FileStamp | None:
        with self._lock:
            return self._stamps.get(sha256)

    def set(self, sha256: str, stamp: FileStamp) -> None:
        with self._lock:
            self._stamps[sha256] = stamp

    def drop(self, sha256: str) -> None:
        with self._lock:
            self._stamps.pop(sha256, None)


async def verified_chunks(fd: int, sha256: str, size: int, chunk: int = CHUNK) -> AsyncIterator[bytes]:
    """The first `size` bytes of the open file `fd`, hashed as they are read (in a worker thread);
    the last chunk is yielded only once all of them hashed to `sha256`, else ImageMismatch."""
    digest, offset, held = hashlib.sha256(), 0, b""

    def read(at: int, n: int) -> bytes:
        data = os.pread(fd, n, at)
        digest.update(data)
        return data

    while offset < size:
        data = await anyio.to_thread.run_sync(read, offset, min(chunk, size - offset))
        if not data:
            raise ImageMismatch(sha256, f"it was cut to {offset:,} bytes while being sent ({size:,} expected)")
        offset += len(data)
        if held:
            yield held
        held = data
    actual = digest.hexdigest()
    if actual != sha256:
        raise ImageMismatch(sha256, f"its SHA-256 is now {actual}")
    if held:
        yield held


@dataclass
class Counters:
    served: int = 0  # downloads sent to their end, verified
    refused: int = 0  # changed before the download: nothing sent
    cut: int = 0  # changed during the download: cut off before its end


class DownloadServer:
    """A small ASGI app under uvicorn, on the executor's event loop."""

    def __init__(self, store: Path, key: bytes, known: KnownGood,
                 on_changed: Callable[[str, str], None] = lambda sha, found: None) -> None:
        self.store, self.key, self.known, self.on_changed = store, key, known, on_changed
        self.counters = Counters()
        self.chunk = CHUNK
        self._checks: dict[str, asyncio.Lock] = {}
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, listen: str) -> tuple[str, int]:
        """Listen on `host:port` (port 0: any free one); returns the address bound."""
        import uvicorn

        host, _, port = listen.rpartition(":")
        server = uvicorn.Server(uvicorn.Config(self, host=host or "127.0.0.1", port=int(port or 0),
                                               log_level="warning", lifespan="off",
                                               # Longer than a client's pool expiry (httpx: 5 s, the
                                               # same as uvicorn's default): the server closing an idle
                                               # connection as a device reuses it fails that download.
                                               timeout_keep_alive=75))
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # ours, not its
        self._server, self._task = server, asyncio.create_task(server.serve())
        while not server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    # --- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http":
            return
        parts = scope["path"].split("/")
        if len(parts) != 4 or parts[:2] != ["", "firmware"]:
            return await _plain(send, 404, "not found")
        token, sha = parts[2], parts[3]
        if len(sha) != 64 or not set(sha) <= _HEX or not hmac.compare_digest(token, firmware_token(self.key, sha)):
            return await _plain(send, 404, "not found")
        if scope["method"] not in ("GET", "HEAD"):
            return await _plain(send, 405, "GET only")
        await self._serve(sha, scope["method"] == "HEAD", receive, send)

    async def _serve(self, sha: str, head: bool, receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        try:
            fh = await anyio.to_thread.run_sync(open, self.store / sha, "rb")
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and self.store.is_dir():
                return await self._refuse(send, sha, f"it is missing from {self.store}")
            return await _plain(send, 404, "not found")
        try:
            stamp = FileStamp.of(os.fstat(fh.fileno()))
            if self.known.get(sha) != stamp:  # not hashed as it is now: in full, before a byte goes out
                async with self._checks.setdefault(sha, asyncio.Lock()):
                    if self.known.get(sha) != stamp:
                        digest, _n = await anyio.to_thread.run_sync(hash_stream, fh, stamp.size)
                        if digest != sha:
                            return await self._refuse(send, sha, f"its SHA-256 is now {digest}")
                        self.known.set(sha, stamp)
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/octet-stream"), (b"content-length", str(stamp.size).encode()),
                (b"cache-control", b"no-store")]})
            if not head:
                gone = asyncio.Event()
                watcher = asyncio.create_task(_watch_disconnect(receive, gone))
                try:
                    async for data in verified_chunks(fh.fileno(), sha, stamp.size, self.chunk):
                        if gone.is_set():
                            return  # the device hung up: nothing more to read
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                except ImageMismatch as exc:
                    self.counters.cut += 1
                    self.known.drop(sha)
                    log.error("firmware %s: %s: %s; download cut off before its end", sha[:16], CHANGED_ON_DISK,
                              exc.found)
                    self._tell(sha, exc.found)
                    return  # uvicorn closes the connection short of its Content-Length
                finally:
                    watcher.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.counters.served += 1
        finally:
            fh.close()

    async def _refuse(self, send: Callable[[Any], Any], sha: str, found: str) -> None:
        self.counters.refused += 1
        self.known.drop(sha)
        log.error("firmware %s: %s: %s; download refused", sha[:16], CHANGED_ON_DISK, found)
        self._tell(sha, found)
        await _plain(send, 409, f"{CHANGED_ON_DISK}: refused")

    def _tell(self, sha: str, found: str) -> None:
        try:
            self.on_changed(sha, found)
        except Exception:  # the executor's problem; serving goes on
            log.exception("firmware %s: reporting the change failed", sha[:16])


async def _watch_disconnect(receive: Callable[[], Any], gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


async def _plain(send: Callable[[Any], Any], status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
