"""The account page: renaming (here and in the backend), your stats, and deleting the account."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from oasst.backend.db import Database
from oasst.backend.models import User, UserStats, utcnow
from tests.conftest import Keys
from tests.web.conftest import Browser, csrf, dev_sign_in


@pytest.fixture
def api(backend_app: FastAPI, keys: Keys) -> Iterator[TestClient]:
    with TestClient(backend_app, headers={"X-API-Key": keys.trusted}) as client:
        yield client


def backend_users(database: Database) -> list[User]:
    return database.read(lambda s: list(s.scalars(select(User).order_by(User.created_date))))


def rename(client: TestClient, name: str) -> Any:
    page = client.get("/account")
    return client.post("/account/name", data={"csrf_token": csrf(page), "display_name": name})


def test_renaming_shows_the_new_name_and_reaches_the_backend(
    browser: Browser, database: Database, api: TestClient
) -> None:
    ann = browser()
    dev_sign_in(ann, "ann")
    (user,) = backend_users(database)

    renamed = rename(ann, "Ann the Brave")
    assert renamed.status_code == 200 and renamed.url.path == "/account"
    assert 'data-testid="display-name">Ann the Brave<' in renamed.text
    assert 'data-testid="renamed"' in renamed.text
    assert api.get(f"/api/v1/users/{user.id}").json()["display_name"] == "Ann the Brave"
    assert ">Ann the Brave</a>" in ann.get("/dashboard").text  # the header's account link


@pytest.mark.parametrize("bad", ["", "   ", " leading space", "x" * 65])
def test_bad_names_are_refused_and_change_nothing(
    browser: Browser, database: Database, api: TestClient, bad: str
) -> None:
    ben = browser()
    dev_sign_in(ben, "ben")
    answer = rename(ben, bad)
    assert answer.status_code == 422
    assert 'data-testid="name-error"' in answer.text
    assert 'data-testid="display-name">ben<' in answer.text
    (user,) = backend_users(database)
    assert api.get(f"/api/v1/users/{user.id}").json()["display_name"] == "ben"


def test_your_stats_per_time_frame(browser: Browser, database: Database) -> None:
    cleo = browser()
    dev_sign_in(cleo, "cleo")
    assert 'data-testid="no-stats"' in cleo.get("/account").text
    (user,) = backend_users(database)

    def scene(s: Any) -> None:
        s.add(
            UserStats(
                time_frame="total",
                user_id=user.id,
                leader_score=42,
                rank=1,
                prompts=3,
                modified_date=utcnow(),
            )
        )
        s.flush()

    database.write(scene)
    page = cleo.get("/account").text
    assert 'data-testid="no-stats"' not in page
    total = page[page.index('data-testid="stats-total"') :]
    assert 'data-testid="stats-score">42<' in total and 'data-testid="stats-rank">1<' in total
    day = page[page.index('data-testid="stats-day"') : page.index('data-testid="stats-week"')]
    assert 'data-testid="stats-score">0<' in day
    assert "Development login" in page[page.index('data-testid="sign-ins"') :]


def test_deleting_the_account_removes_the_backend_user_and_signs_out(
    browser: Browser, database: Database, api: TestClient
) -> None:
    dora = browser()
    dev_sign_in(dora, "dora")
    (old,) = backend_users(database)

    form = dora.get("/account/delete")
    refused = dora.post("/account/delete", data={"csrf_token": csrf(form), "confirm": "delete"})
    assert refused.status_code == 422 and 'data-testid="delete-error"' in refused.text
    assert api.get(f"/api/v1/users/{old.id}").json()["deleted"] is False

    done = dora.post("/account/delete", data={"csrf_token": csrf(form), "confirm": "DELETE"})
    assert done.status_code == 200 and 'data-testid="account-deleted"' in done.text
    gone = api.get(f"/api/v1/users/{old.id}").json()
    assert gone["deleted"] is True and gone["display_name"] != "dora"
    assert dora.get("/account").url.path == "/signin"

    dev_sign_in(dora, "dora")  # the same person signs in again: a new, empty account
    page = dora.get("/account")
    assert page.status_code == 200 and 'data-testid="no-stats"' in page.text
    live = [u for u in backend_users(database) if not u.deleted]
    assert len(live) == 1 and live[0].id != old.id and live[0].display_name == "dora"
    assert api.get(f"/api/v1/users/{old.id}").json()["deleted"] is True
