"""Dashboard pages for advisories: priority, affected devices by model and firmware, remediation."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
