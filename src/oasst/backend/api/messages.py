"""`/api/v1/messages` routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
