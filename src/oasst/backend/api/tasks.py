"""`/api/v1/tasks` routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
