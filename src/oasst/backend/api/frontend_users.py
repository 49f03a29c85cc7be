"""`/api/v1/frontend_users` routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
