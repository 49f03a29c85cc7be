"""`/api/v1/text_labels` routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
