"""Dashboard page for the audit log: searchable, with the hash chain's verification status."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
