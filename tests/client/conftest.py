"""Fixtures of the client tests: the real backend app in process, reached through ``httpx.ASGITransport``,
on every test database (SQLite and PostgreSQL), with helpers the test modules share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import httpx
import pytest
from fastapi import FastAPI

from oasst.backend.app import create_app
from oasst.backend.db import Database
from oasst.backend.models import User as UserRow
from oasst.backend.settings import Settings
from oasst.client import BackendClient
from oasst.protocol.common import CreateFrontendUserRequest, User
from tests.backend.factories import World, make_world, wire_user
from tests.conftest import Keys, make_test_settings

T = TypeVar("T")
BASE = "http://backend.test"

Connect = Callable[..., BackendClient]


def run(coro: Awaitable[T]) -> T:
    async def _wrap() -> T:
        return await coro

    return asyncio.run(_wrap())


def volunteer(name: str) -> User:
    return User(id=name, display_name=name.title(), auth_method="local")


def as_wire(row: UserRow) -> User:
    """The ``{id, display_name, auth_method}`` a frontend sends for a user row of the factories."""
    return User.model_validate(wire_user(row))


async def accept_tos(client: BackendClient, user: User) -> None:
    await client.upsert_frontend_user(CreateFrontendUserRequest(**user.model_dump(), tos_acceptance=True))


@pytest.fixture
def settings(database_url: str) -> Settings:
    tree = {"goal_tree_size": 2, "num_reviews_initial_prompt": 1, "num_reviews_reply": 1}
    return make_test_settings(database_url, tree_manager=tree, rate_limits={"enabled": False})


@pytest.fixture
def app(settings: Settings, database: Database) -> FastAPI:
    return create_app(settings, database=database, migrate=False)


@pytest.fixture
def connect(app: FastAPI, keys: Keys) -> Iterator[Connect]:
    """Make clients of the in-process app (trusted key unless another is given)."""

    def make(api_key: str | None = keys.trusted) -> BackendClient:
        return BackendClient(BASE, api_key, transport=httpx.ASGITransport(app=app))

    yield make


@pytest.fixture
def world(database: Database, keys: Keys) -> World:
    """``make_world``: alice's and bob's tree "text 0".."text 5" (trusted key), carol's root (untrusted)."""
    return database.write(lambda s: make_world(s, keys))
