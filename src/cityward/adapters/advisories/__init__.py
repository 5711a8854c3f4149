"""Adapters for security advisories (CSAF)."""
