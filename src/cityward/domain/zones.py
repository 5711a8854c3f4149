"""Zones: where devices stand, how critical that place is, and when work may happen there."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cityward.errors import Problem


class Criticality(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True)
class MaintenanceWindow:
    """A recurring window (cron start, duration, time zone) outside which rollouts start nothing."""

    cron: str
    duration_minutes: int
    timezone: str = "UTC"

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        if len(self.cron.split()) != 5:
            found.append(Problem("cron needs five fields: minute hour day month weekday", field="cron"))
        if not 1 <= self.duration_minutes <= 7 * 24 * 60:
            found.append(Problem("duration must be 1 minute to 7 days", field="duration_minutes"))
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            found.append(Problem(f"unknown time zone {self.timezone!r}", field="timezone"))
        return found
