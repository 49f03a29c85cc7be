"""Shared fixtures: a fresh database per test run on SQLite and on real PostgreSQL, real Redis.

* ``OASST_TEST_DATABASES`` (default ``sqlite,postgres``) picks the databases backend tests run on.
* ``OASST_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) is the
  server where each run creates, and at the end drops, its own database.
* ``OASST_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``).
* With ``CI=true`` a missing PostgreSQL or Redis fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from oasst.backend.app import create_app
from oasst.backend.db import Database, make_engine
from oasst.backend.migrate import upgrade
from oasst.backend.models import Base
from oasst.backend.services.clients import create_api_client
from oasst.backend.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_SERVER_URL = os.environ.get(
    "OASST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("OASST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
DATABASES = [
    d.strip() for d in os.environ.get("OASST_TEST_DATABASES", "sqlite,postgres").split(",") if d.strip()
]
ROOT_TOKEN = "test-root-token-0123456789"


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI but not reachable", pytrace=False)
    pytest.skip(f"{what} not reachable")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Create this run's own PostgreSQL database, migrated once; dropped at the end."""
    server = make_url(PG_SERVER_URL)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"oasst_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        _missing(f"PostgreSQL at {server.render_as_string(hide_password=True)} ({exc.__class__.__name__})")
    url = server.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("db") / "oasst.db"
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        _missing(f"Redis at {REDIS_URL} ({exc.__class__.__name__})")
    return REDIS_URL


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of a migrated, empty database: each backend test runs once per database kind."""
    kind = request.param
    if kind == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    if kind == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    raise ValueError(f"unknown test database kind {kind!r}")


def _truncate(engine: Engine) -> None:
    tables = list(reversed(Base.metadata.sorted_tables))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            conn.execute(text(f"TRUNCATE {names} CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


def make_test_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "root_tokens": [ROOT_TOKEN],
        "run_scheduler": False,
        "prompt_lottery_interval_sec": 0,  # tests check the lottery's effect on the very next request
        "db_pool_size": 5,
        "db_max_overflow": 40,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_test_settings(database_url)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db = Database(make_engine(settings))
    _truncate(db.engine)
    yield db
    _truncate(db.engine)
    db.dispose()


@dataclass
class Keys:
    trusted: str
    untrusted: str


@pytest.fixture
def keys(database: Database) -> Keys:
    trusted = database.write(lambda s: create_api_client(s, description="trusted test", trusted=True)[1])
    untrusted = database.write(lambda s: create_api_client(s, description="untrusted test")[1])
    return Keys(trusted=trusted, untrusted=untrusted)


@pytest.fixture
def app_client(settings: Settings, database: Database, keys: Keys) -> Iterator[TestClient]:
    """A TestClient for the backend, sending the trusted key by default."""
    app = create_app(settings, database=database, migrate=False)
    with TestClient(app, headers={"X-API-Key": keys.trusted}, raise_server_exceptions=False) as client:
        yield client


def make_user(n: int | str, auth_method: str = "local") -> dict[str, str]:
    return {"id": f"user-{n}", "display_name": f"User {n}", "auth_method": auth_method}


def sample_missing(what: str) -> None:
    """The shared oasst2 sample is required in CI (fail); locally its absence skips."""
    _missing(what)
