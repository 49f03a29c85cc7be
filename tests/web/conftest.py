"""Fixtures of the website tests: the real backend app in process (SQLite and PostgreSQL), the website
over it through ``httpx.ASGITransport``, and a ``TestClient`` per browser session."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from oasst.backend.app import create_app as create_backend_app
from oasst.backend.db import Database
from oasst.backend.settings import Settings
from oasst.web.accounts.models import WebBase
from oasst.web.app import create_app as create_web_app
from oasst.web.mailer import ConsoleMailer
from oasst.web.settings import WebSettings
from tests.conftest import Keys, make_test_settings

BACKEND = "http://backend.test"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def settings(database_url: str) -> Settings:
    tree = {"goal_tree_size": 3, "num_reviews_initial_prompt": 1, "num_reviews_reply": 1,
            "num_required_rankings": 1, "max_children_count": 2}  # fmt: skip
    return make_test_settings(database_url, tree_manager=tree, rate_limits={"enabled": False})


@pytest.fixture
def backend_app(settings: Settings, database: Database) -> FastAPI:
    return create_backend_app(settings, database=database, migrate=False)


def _clear_web_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in reversed(WebBase.metadata.sorted_tables):
                if engine.dialect.has_table(conn, table.name):
                    conn.execute(table.delete())
    finally:
        engine.dispose()


@pytest.fixture
def web_settings(database_url: str, keys: Keys) -> WebSettings:
    _clear_web_tables(database_url)
    return WebSettings(
        environment="development",
        base_url="http://testserver",
        database_url=database_url,
        backend_url=BACKEND,
        backend_api_key=keys.trusted,
        dev_login=True,
        admin_emails=["boss@example.org"],
    )


@pytest.fixture
def mailer() -> ConsoleMailer:
    return ConsoleMailer()


@pytest.fixture
def web_app(web_settings: WebSettings, backend_app: FastAPI, mailer: ConsoleMailer) -> FastAPI:
    return create_web_app(web_settings, backend_transport=httpx.ASGITransport(app=backend_app), mailer=mailer)


Browser = Callable[..., TestClient]


@pytest.fixture
def browser(web_app: FastAPI) -> Iterator[Browser]:
    """Opens independent browser sessions (each its own cookie jar) on the website."""
    opened: list[TestClient] = []

    def open_session(**kwargs: Any) -> TestClient:
        client = TestClient(web_app, raise_server_exceptions=False, follow_redirects=True, **kwargs)
        client.__enter__()
        opened.append(client)
        return client

    yield open_session
    for client in opened:
        client.__exit__(None, None, None)


def csrf(page: httpx.Response) -> str:
    found = CSRF_FIELD.search(page.text)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def dev_sign_in(client: TestClient, name: str, role: str = "general", accept_terms: bool = True) -> None:
    page = client.get("/signin")
    answer = client.post("/signin/dev", data={"csrf_token": csrf(page), "username": name, "role": role})
    assert answer.status_code == 200, answer.text
    if accept_terms:
        tos = client.get("/tos")
        client.post("/tos", data={"csrf_token": csrf(tos), "next": "/dashboard"}).raise_for_status()
