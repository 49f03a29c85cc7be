"""The admin area: who may enter, the user list and search, role changes and their limits, bans.

Shared helpers for the other ``test_admin_*`` modules live here too (a backend user's record, writing a
prompt through the task protocol)."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from oasst.web.accounts.models import Role
from tests.web.conftest import Browser, csrf, dev_sign_in

API = "/api/v1"
_counter = itertools.count()


# -- helpers shared by the admin tests -------------------------------------------------------------


def backend_user(app_client: TestClient, display_name: str) -> dict[str, Any]:
    """The backend's record of the one user with this display name."""
    page = app_client.get(
        f"{API}/users/cursor", params={"sort_key": "display_name", "search_text": display_name}
    ).json()
    found = [u for u in page["items"] if u["display_name"] == display_name]
    assert len(found) == 1, page
    return dict(found[0])


def write_prompt(app_client: TestClient, user: dict[str, str], text: str) -> str:
    """``user`` writes an initial prompt through the task protocol; returns the message's backend id."""
    task = app_client.post(f"{API}/tasks/", json={"type": "initial_prompt", "user": user, "lang": "en"})
    assert task.status_code == 200, task.text
    task_id = task.json()["id"]
    frontend_id = f"admin-test-{next(_counter)}-{uuid.uuid4().hex[:6]}"
    app_client.post(f"{API}/tasks/{task_id}/ack", json={"message_id": frontend_id}).raise_for_status()
    body = {
        "type": "text_reply_to_message",
        "message_id": frontend_id,
        "user_message_id": f"msg-{frontend_id}",
        "text": text,
        "lang": "en",
        "user": user,
    }
    app_client.post(f"{API}/tasks/interaction", json=body).raise_for_status()
    return str(app_client.get(f"{API}/frontend_messages/msg-{frontend_id}").json()["id"])


def volunteer(app_client: TestClient, name: str, auth_method: str = "local") -> dict[str, str]:
    """A backend user of the website's API client with no website account (e.g. a Discord bot user)."""
    user = {"id": name, "display_name": name.title(), "auth_method": auth_method}
    app_client.post(f"{API}/frontend_users/", json={**user, "tos_acceptance": True}).raise_for_status()
    return user


def signed_in(browser: Browser, name: str, role: str = "general") -> TestClient:
    client = browser()
    dev_sign_in(client, name, role)
    return client


def post_user_form(client: TestClient, user_id: str, **fields: str) -> Any:
    """Submit the manage-user form with the page's current values, overridden by ``fields``."""
    page = client.get(f"/admin/users/{user_id}")
    data = {"csrf_token": csrf(page), "display_name": fields.pop("display_name", "Someone"), **fields}
    return client.post(f"/admin/users/{user_id}", data=data)


def web_role(web_app: Any, account_name: str) -> Role:
    store = web_app.state.accounts
    account = store.sign_in("dev", account_name, display_name=account_name)
    return Role(account.role)


# -- who may enter ---------------------------------------------------------------------------------

ADMIN_PAGES = [
    "/admin",
    "/admin/users",
    "/admin/messages",
    "/admin/flagged",
    "/admin/trollboard",
    "/admin/status",
]


def test_general_users_are_refused_and_strangers_sent_to_sign_in(
    browser: Browser, app_client: TestClient
) -> None:
    anon = browser()
    assert anon.get("/admin/users").url.path == "/signin"
    gus = signed_in(browser, "gus")
    for path in [*ADMIN_PAGES, "/admin/parameters"]:
        answer = gus.get(path)
        assert answer.status_code == 403, path
        assert 'data-error-code="forbidden"' in answer.text
    target = backend_user(app_client, "gus")["user_id"]
    page = gus.get("/dashboard")
    refused = gus.post(
        f"/admin/users/{target}", data={"csrf_token": csrf(page), "role": "admin", "display_name": "gus"}
    )
    assert refused.status_code == 403
    assert "Admin" not in page.text.split("<main")[0]  # no admin link in the header


def test_moderators_see_every_page_but_parameters(browser: Browser) -> None:
    mia = signed_in(browser, "mia", "moderator")
    for path in ADMIN_PAGES:
        answer = mia.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        assert 'data-testid="admin-nav"' in answer.text
    assert mia.get("/admin/parameters").status_code == 403
    assert 'href="/admin/parameters"' not in mia.get("/admin").text


def test_parameters_show_the_backend_settings_to_admins(browser: Browser) -> None:
    ada = signed_in(browser, "ada", "admin")
    page = ada.get("/admin/parameters")
    assert page.status_code == 200
    assert 'data-testid="parameters"' in page.text
    assert "goal_tree_size" in page.text  # the tests' tree manager settings
    assert 'href="/admin/parameters"' in ada.get("/admin").text


# -- the user list ---------------------------------------------------------------------------------


def test_moderator_lists_and_searches_users(browser: Browser, app_client: TestClient) -> None:
    signed_in(browser, "alice")
    signed_in(browser, "bob")
    volunteer(app_client, "80351110224678912", auth_method="discord")  # a Discord bot user
    mia = signed_in(browser, "mia", "moderator")

    page = mia.get("/admin/users")
    assert page.status_code == 200
    for name in ("alice", "bob", "mia", "80351110224678912"):
        assert f">{name}<" in page.text
    rows = page.text.split('data-testid="user-row"')[1:]
    alice_row = next(r for r in rows if ">alice<" in r)
    assert 'data-testid="role">general<' in alice_row
    mia_row = next(r for r in rows if ">mia<" in r)
    assert 'data-testid="role">moderator<' in mia_row
    discord_row = next(r for r in rows if "80351110224678912" in r)
    assert 'data-testid="no-account"' in discord_row

    found = mia.get("/admin/users", params={"q": "LIC"})
    assert ">alice<" in found.text and ">bob<" not in found.text
    nothing = mia.get("/admin/users", params={"q": "nobody-like-this"})
    assert 'data-testid="no-users"' in nothing.text


def test_user_list_pages_with_cursors(browser: Browser, app_client: TestClient) -> None:
    for n in range(53):
        volunteer(app_client, f"crowd-{n:02d}")
    mia = signed_in(browser, "mia", "moderator")
    first = mia.get("/admin/users", params={"q": "crowd"})
    assert first.text.count('data-testid="user-row"') == 50
    nxt = first.text.split('data-testid="next-page"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = mia.get(nxt.replace("&amp;", "&"))
    assert second.text.count('data-testid="user-row"') == 3
    assert ">Crowd-52<" in second.text and ">Crowd-52<" not in first.text


# -- roles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "moderator"])
def test_moderator_cannot_make_moderators_or_admins(
    browser: Browser, app_client: TestClient, web_app: Any, role: str
) -> None:
    signed_in(browser, "bob")
    mia = signed_in(browser, "mia", "moderator")
    bob = backend_user(app_client, "bob")
    answer = post_user_form(mia, bob["user_id"], role=role, display_name="bob", notes="promoted?")
    assert answer.status_code == 403
    assert web_role(web_app, "bob") is Role.general
    after = backend_user(app_client, "bob")
    assert after["notes"] == "" and after["enabled"] is True
    page = mia.get(f"/admin/users/{bob['user_id']}")
    options = page.text.split('data-testid="role-select"')[1].split("</select>")[0]
    assert 'value="general"' in options and 'value="banned"' in options
    assert 'value="admin"' not in options and 'value="moderator"' not in options


@pytest.mark.parametrize("target_role", ["admin", "moderator"])
def test_moderator_cannot_change_moderators_or_admins(
    browser: Browser, app_client: TestClient, web_app: Any, target_role: str
) -> None:
    signed_in(browser, "boss", target_role)
    mia = signed_in(browser, "mia", "moderator")
    boss = backend_user(app_client, "boss")
    assert 'data-testid="read-only"' in mia.get(f"/admin/users/{boss['user_id']}").text
    answer = post_user_form(mia, boss["user_id"], role="banned", display_name="boss")
    assert answer.status_code == 403
    assert web_role(web_app, "boss") is Role(target_role)
    assert backend_user(app_client, "boss")["enabled"] is True


def test_admin_makes_a_moderator_but_cannot_demote_themself(
    browser: Browser, app_client: TestClient, web_app: Any
) -> None:
    signed_in(browser, "bob")
    ada = signed_in(browser, "ada", "admin")
    bob = backend_user(app_client, "bob")
    made = post_user_form(ada, bob["user_id"], role="moderator", display_name="bob")
    assert made.status_code == 200 and 'data-testid="notice"' in made.text
    assert web_role(web_app, "bob") is Role.moderator

    me = backend_user(app_client, "ada")
    for role in ("general", "banned", "moderator"):
        assert post_user_form(ada, me["user_id"], role=role, display_name="ada").status_code == 403
    assert web_role(web_app, "ada") is Role.admin
    kept = post_user_form(ada, me["user_id"], role="admin", display_name="ada", notes="the boss")
    assert kept.status_code == 200
    assert backend_user(app_client, "ada")["notes"] == "the boss"


def test_unknown_roles_and_empty_names_are_refused(browser: Browser, app_client: TestClient) -> None:
    signed_in(browser, "bob")
    ada = signed_in(browser, "ada", "admin")
    bob = backend_user(app_client, "bob")
    assert post_user_form(ada, bob["user_id"], role="superuser", display_name="bob").status_code == 422
    assert post_user_form(ada, bob["user_id"], role="general", display_name="   ").status_code == 422
    missing = ada.get(f"/admin/users/{uuid.uuid4()}")
    assert missing.status_code == 404


# -- bans ------------------------------------------------------------------------------------------


def test_ban_locks_the_person_out_everywhere_and_unban_lets_them_back(
    browser: Browser, app_client: TestClient, web_app: Any
) -> None:
    bob = signed_in(browser, "bob")
    assert bob.get("/dashboard").status_code == 200
    record = backend_user(app_client, "bob")
    ada = signed_in(browser, "ada", "admin")

    banned = post_user_form(ada, record["user_id"], role="banned", display_name="bob")
    assert banned.status_code == 200
    assert "banned" in banned.url.params["done"]
    assert 'data-testid="notice"' in banned.text
    assert backend_user(app_client, "bob")["enabled"] is False
    assert web_role(web_app, "bob") is Role.banned

    # the ban signed bob out; signing in again ends at a 403 with the code "banned"
    assert bob.get("/dashboard").url.path == "/signin"
    page = bob.get("/signin")
    bob.post("/signin/dev", data={"csrf_token": csrf(page), "username": "bob", "role": "general"})
    refused = bob.get("/dashboard")
    assert refused.status_code == 403 and 'data-error-code="banned"' in refused.text

    # the backend refuses bob's tasks too, so the Discord bot and other frontends do
    bob_user = {"id": record["id"], "display_name": "bob", "auth_method": "local"}
    task = app_client.post(f"{API}/tasks/", json={"type": "random", "user": bob_user, "lang": "en"})
    assert task.json()["error_code"] == 4001  # USER_DISABLED

    unbanned = post_user_form(ada, record["user_id"], role="general", display_name="bob")
    assert unbanned.url.params["done"] == "unbanned"
    assert backend_user(app_client, "bob")["enabled"] is True
    assert web_role(web_app, "bob") is Role.general
    assert bob.get("/dashboard").status_code == 200


def test_users_without_a_website_account_can_be_banned_on_the_backend(
    browser: Browser, app_client: TestClient
) -> None:
    user = volunteer(app_client, "80351110224678912", auth_method="discord")
    mia = signed_in(browser, "mia", "moderator")
    record = backend_user(app_client, user["display_name"])
    page = mia.get(f"/admin/users/{record['user_id']}")
    assert 'data-testid="no-account"' in page.text
    assert post_user_form(mia, record["user_id"], role="moderator", display_name="X").status_code == 403

    banned = post_user_form(mia, record["user_id"], role="banned", display_name=user["display_name"])
    assert banned.url.params["done"] == "banned"
    assert backend_user(app_client, user["display_name"])["enabled"] is False
    assert 'data-enabled="false"' in banned.text
    listed = mia.get("/admin/users", params={"q": user["display_name"]})
    assert 'data-testid="disabled"' in listed.text

    post_user_form(mia, record["user_id"], role="general", display_name=user["display_name"])
    assert backend_user(app_client, user["display_name"])["enabled"] is True


def test_notes_leaderboard_visibility_and_name_reach_the_backend(
    browser: Browser, app_client: TestClient
) -> None:
    alice = signed_in(browser, "alice")
    mia = signed_in(browser, "mia", "moderator")
    record = backend_user(app_client, "alice")
    saved = post_user_form(
        mia, record["user_id"], role="general", display_name="Alice A.", notes="spams links"
    )
    assert saved.url.params["done"] == "saved"
    after = backend_user(app_client, "Alice A.")
    assert after["notes"] == "spams links"
    assert after["show_on_leaderboard"] is False  # the box was not ticked
    assert "spams links" in saved.text
    assert "Alice A." in alice.get("/dashboard").text  # the website account was renamed too

    post_user_form(
        mia, record["user_id"], role="general", display_name="Alice A.", notes="", show_on_leaderboard="true"
    )
    again = backend_user(app_client, "Alice A.")
    assert again["show_on_leaderboard"] is True and again["notes"] == ""


def test_user_page_lists_their_messages_and_stats(browser: Browser, app_client: TestClient) -> None:
    writer = volunteer(app_client, "writer")
    write_prompt(app_client, writer, "A question about **otters**")
    mia = signed_in(browser, "mia", "moderator")
    record = backend_user(app_client, "Writer")
    page = mia.get(f"/admin/users/{record['user_id']}")
    assert page.status_code == 200
    assert page.text.count('data-testid="message-row"') == 1
    assert "A question about **otters**" in page.text  # the excerpt is plain text
