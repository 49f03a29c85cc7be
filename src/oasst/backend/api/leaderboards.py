"""`/api/v1/leaderboards` routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
