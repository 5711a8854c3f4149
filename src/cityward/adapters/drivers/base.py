"""The one contract every transport fulfils, and the one error type it raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from cityward.domain.telemetry import Command, Result, State
from cityward.errors import CitywardError


class DriverError(CitywardError):
    """A device or the broker could not be reached or answered nonsense; library errors never
    escape a driver.

    `reason` is a short category (unreachable, timeout, auth, locked, protocol, refused, config,
    link) for counting and for deciding whether a retry makes sense. `link` is the platform's own
    broker connection, down for longer than the caller could wait: it says nothing about the
    device, so it is never recorded as the device's result."""

    title = "Device communication failed"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one device."""

    device_id: str
    address: str | None = None  # host:port, for HTTP
    password: str | None = None  # HTTP admin password (from the encrypted store)


class DeviceDriver(Protocol):
    async def read_state(self, device: Endpoint) -> State:
        """The device's current facts."""
        ...

    def send(self, device: Endpoint, command: Command, *, timeout: float = 60.0) -> AsyncIterator[Result]:
        """Deliver a command and follow it: yields each result, the last one terminal.

        Raises DriverError when the device cannot be reached or no terminal result arrives in
        time. Sending the same command again is safe: the device answers with the stored result."""
        ...
