"""The website's pages, one module per area; ``mount_routes`` adds every router that exists."""

from __future__ import annotations

import importlib

from fastapi import FastAPI

ROUTE_MODULES = ["auth", "home", "tasks", "guidelines", "messages", "leaderboard", "account", "admin", "chat"]


def mount_routes(app: FastAPI) -> None:
    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(f"oasst.web.routes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"oasst.web.routes.{name}":
                raise
            continue
        app.include_router(module.router)
