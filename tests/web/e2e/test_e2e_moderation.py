"""In a real browser: the admin pages for moderators (and a 403 for everybody else), and a ban."""

from __future__ import annotations

import uuid
from typing import Any

from tests.web.e2e.conftest import NewPage, Site, backend, dev_sign_in, open_task, review_and_submit

ADMIN_PAGES = [
    "/admin",
    "/admin/users",
    "/admin/messages",
    "/admin/flagged",
    "/admin/trollboard",
    "/admin/status",
]


def open_user_page(page: Any, name: str) -> str:
    """Finds a user by name on ``/admin/users`` and opens their page; returns their backend id."""
    page.goto("/admin/users")
    page.fill("[data-testid=user-search]", name)
    with page.expect_navigation():
        page.press("[data-testid=user-search]", "Enter")
    rows = page.locator("[data-testid=user-row]")
    assert rows.count() == 1, rows.all_inner_texts()
    with page.expect_navigation():
        rows.get_by_role("link", name=name).click()
    return str(page.url.rsplit("/", 1)[-1])


def click_confirmed(page: Any, testid: str) -> None:
    """Clicks a button whose form asks ``confirm()`` first, and accepts."""
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click(f"[data-testid={testid}]")


def test_moderator_works_through_every_admin_page_and_others_get_403(new_page: NewPage, site: Site) -> None:
    tag = uuid.uuid4().hex[:6]
    marker = f"moderate-{tag}"
    author: Any = new_page()
    author_name = f"author-{tag}"
    dev_sign_in(author, author_name)
    assert open_task(author, "initial_prompt") == "create"
    author.fill("[data-testid=reply-text]", f"What is the capital of Australia, and why not Sydney? {marker}")
    reply_id = author.locator("input[name=reply_id]").input_value()
    review_and_submit(author)
    with backend(site) as api:
        message_id = api.get(f"/frontend_messages/{reply_id}").raise_for_status().json()["id"]

    # a volunteer reports the message; the same volunteer may not enter the admin area
    other: Any = new_page()
    dev_sign_in(other, f"plain-{tag}")
    other.goto(f"/messages/{message_id}")
    other.click("[data-testid=report-panel] summary")
    other.fill("[data-testid=report-form] textarea", "Looks like homework spam to me.")
    with other.expect_navigation():
        other.click("[data-testid=report-submit]")
    assert other.locator("[data-testid=report-sent]").is_visible()
    assert other.locator("nav.main-nav a[href='/admin']").count() == 0
    for path in [*ADMIN_PAGES, f"/admin/users/{message_id}", f"/admin/messages/{message_id}"]:
        answer = other.goto(path)
        assert answer.status == 403, path
        assert other.locator("[data-error-code=forbidden]").is_visible(), path

    mod: Any = new_page()
    dev_sign_in(mod, f"mod-{tag}", role="moderator")
    with mod.expect_navigation():
        mod.click("nav.main-nav a[href='/admin']")
    assert mod.url.endswith("/admin")
    assert int(mod.locator("[data-testid=system-stats] [data-testid=stat-all]").inner_text()) >= 1
    assert int(mod.locator("[data-testid=state-initial_prompt_review]").inner_text()) >= 1
    assert mod.locator("[data-testid=open-flags]").is_visible()
    assert mod.goto("/admin/parameters").status == 403  # administrators only

    # users: find the author, see their message on their page
    user_id = open_user_page(mod, author_name)
    assert mod.locator("[data-testid=role]").first.inner_text() == "general"
    assert mod.locator("[data-testid=role-select]").input_value() == "general"
    assert marker in mod.locator("[data-testid=messages]").inner_text()
    with backend(site) as api:
        assert api.get(f"/users/{user_id}").raise_for_status().json()["display_name"] == author_name

    # messages: search, open, halt and resume the tree
    mod.goto("/admin/messages")
    mod.fill("[data-testid=message-search]", marker)
    with mod.expect_navigation():
        mod.press("[data-testid=message-search]", "Enter")
    rows = mod.locator("[data-testid=message-row]")
    assert rows.count() == 1 and rows.get_attribute("data-message-id") == message_id
    with mod.expect_navigation():
        rows.locator("a").first.click()
    assert marker in mod.locator("[data-testid=message-text]").inner_text()
    assert mod.locator("[data-testid=tree-state]").get_attribute("data-state") == "initial_prompt_review"
    click_confirmed(mod, "halt")
    assert mod.locator("[data-testid=notice]").is_visible()
    assert mod.locator("[data-testid=tree-state]").get_attribute("data-state") == "halted_by_moderator"
    with backend(site) as api:
        assert api.get(f"/messages/{message_id}/tree/state").json()["state"] == "halted_by_moderator"
    with mod.expect_navigation():
        mod.click("[data-testid=resume]")
    assert mod.locator("[data-testid=tree-state]").get_attribute("data-state") == "initial_prompt_review"
    with backend(site) as api:
        assert api.get(f"/messages/{message_id}/tree/state").json()["state"] == "initial_prompt_review"

    # flagged: the report waits in the queue until it is marked processed
    mod.goto("/admin/flagged")
    flagged = mod.locator(f"[data-testid=flagged-row][data-message-id='{message_id}']")
    assert marker in flagged.inner_text()
    with mod.expect_navigation():
        flagged.locator("[data-testid=mark-processed]").click()
    assert mod.locator(f"[data-testid=flagged-row][data-message-id='{message_id}']").count() == 0

    # trollboard: a table per time frame, switched by the select
    mod.goto("/admin/trollboard")
    assert mod.locator("[data-testid=trollboard]").is_visible()
    with mod.expect_navigation():
        mod.select_option("[data-testid=time-frame]", "total")
    assert "time_frame=total" in mod.url
    board = mod.locator("[data-testid=trollboard]")
    assert board.locator("[data-testid=troll-row], [data-testid=no-trolls]").count() >= 1

    # status: counts, tasks available now, the backend's public settings
    mod.goto("/admin/status")
    assert int(mod.locator("[data-testid=system-stats] [data-testid=stat-all]").inner_text()) >= 1
    assert int(mod.locator("[data-testid=lang-en]").inner_text()) >= 1
    assert mod.locator("[data-testid=availability] [data-testid^=available-]").count() >= 3
    assert "{" in mod.locator("[data-testid=public-settings]").inner_text()


def test_a_ban_locks_the_user_out(new_page: NewPage, site: Site) -> None:
    tag = uuid.uuid4().hex[:6]
    victim_name = f"troll-{tag}"
    victim: Any = new_page()
    dev_sign_in(victim, victim_name)
    assert open_task(victim, "initial_prompt") == "create"  # the backend knows them from now on
    victim.fill("[data-testid=reply-text]", f"A prompt written while the ban happens {tag}")

    boss: Any = new_page()
    dev_sign_in(boss, f"boss-{tag}", role="admin")
    user_id = open_user_page(boss, victim_name)
    boss.select_option("[data-testid=role-select]", "banned")
    with boss.expect_navigation():
        boss.click("[data-testid=save-user]")
    assert "done=banned" in boss.url and boss.locator("[data-testid=notice]").is_visible()
    assert boss.locator("[data-testid=backend-enabled]").get_attribute("data-enabled") == "false"
    assert boss.locator("[data-testid=role]").first.inner_text() == "banned"

    # the open task cannot be submitted any more: the ban ended every session of the person
    with backend(site) as api:
        before = api.get("/stats/").json()["all"]
    victim.click("[data-testid=review]")
    with victim.expect_navigation():
        victim.click("[data-testid=submit]")
    assert victim.locator("[data-error-code=sign_in_required]").is_visible()
    victim.goto("/dashboard")
    assert "/signin" in victim.url
    # signing in again ends at the banned page, and so does every page behind it
    dev_sign_in(victim, victim_name, accept_terms=False)
    assert victim.locator("[data-error-code=banned]").is_visible()
    answer = victim.goto("/tasks/random")
    assert answer.status == 403 and victim.locator("[data-error-code=banned]").is_visible()

    with backend(site) as api:
        assert api.get("/stats/").json()["all"] == before  # nothing was stored
        user = api.get(f"/users/{user_id}").raise_for_status().json()
        assert user["enabled"] is False
        who = {"id": user["id"], "display_name": user["display_name"], "auth_method": user["auth_method"]}
        refused = api.post("/tasks/", json={"type": "random", "user": who, "lang": "en"})
        assert refused.json()["error_code"] == 4001  # USER_DISABLED, for every frontend
