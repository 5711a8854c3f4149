"""Dashboard pages for policy findings: by rule, zone and organization; a selection becomes a
remediation rollout, its plan shown before anything runs."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
