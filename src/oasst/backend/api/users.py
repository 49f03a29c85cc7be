"""`/api/v1/users` routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
