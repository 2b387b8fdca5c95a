"""The API's loras endpoints (to be filled by the issue-12 pass; registered in generation/api/__init__.py)."""

from __future__ import annotations

from ninja import Router

router = Router(tags=["loras"])
