"""`/api/v1/admin` routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
