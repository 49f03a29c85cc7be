"""`/api/v1/stats` routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
