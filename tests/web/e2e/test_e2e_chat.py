"""In a real browser: a chat with the model served by ``oasst up`` — the reply streams in, then regenerate,
the ‹ i/n › navigator, an edit branch, drafts, a vote, a report, rename, export and delete, with no
Content-Security-Policy violation on the way.

The model is real (a tiny one), so its words are unknown: the test checks what the page does with them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from tests.web.e2e.conftest import NewPage, Site, dev_sign_in

FINAL = (
    "article[data-role=assistant][data-state=complete], article[data-role=assistant][data-state=cancelled]"
)


def chat_enabled(page: Any) -> bool:
    """Whether the site offers chat: its nav shows the Chat link to a signed-in person."""
    return page.locator("[data-testid=nav-chat]").count() > 0


def wait_for_replies(page: Any, count: int) -> None:
    """Until ``count`` assistant messages on the page have finished and nothing streams any more."""
    page.wait_for_function(
        "([selector, n]) => document.querySelectorAll(selector).length >= n"
        " && !document.querySelector('[data-streaming]')",
        arg=[FINAL, count],
        timeout=120_000,
    )


def branch_positions(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("[data-testid=branch-pos]").all_inner_texts()]


def chat_flow(page: Any) -> None:
    """The whole chat flow for a signed-in person on a page of a site with chat."""
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
    marker = uuid.uuid4().hex[:8]

    page.click("[data-testid=nav-chat]")
    page.wait_for_url("**/chat")
    page.fill("[data-testid=system-prompt]", "Answer in one short sentence.")
    page.fill("[data-testid=first-message]", f"Hello! What is a tree? {marker}")
    page.click("[data-testid=new-chat]")
    page.wait_for_url(re.compile(r"/chat/[^/?]+\?at="))
    assert (
        page.locator("[data-testid=system-prompt-shown]")
        .inner_text()
        .endswith("Answer in one short sentence.")
    )
    wait_for_replies(page, 1)  # streamed over the website's SSE proxy, then replaced by the rendered reply
    assert page.locator("[data-testid=send]").is_enabled()
    chat_url = page.url.split("?")[0]

    # regenerate: a second reply, and the navigator switches between the two
    page.click("[data-testid=regenerate]")
    wait_for_replies(page, 1)
    assert branch_positions(page) == ["2/2"]
    page.click("[data-testid=branch-prev]")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=branch-pos]').textContent.trim() === '1/2'"
    )

    # a follow-up sent with Enter, then an edit of it: a sibling branch of the follow-up
    page.fill("[data-testid=composer-input]", "Name one tree.")
    page.press("[data-testid=composer-input]", "Enter")
    page.wait_for_selector("text=Name one tree.")
    wait_for_replies(page, 2)
    page.locator("[data-testid=edit-panel] summary").last.click()
    page.locator("[data-testid=edit-input]").last.fill("Name two trees.")
    page.locator("[data-testid=edit-submit]").last.click()
    page.wait_for_selector("text=Name two trees.")
    wait_for_replies(page, 2)
    assert branch_positions(page) == ["1/2", "2/2"]

    # 👍 without a reload, then a report
    vote = page.locator("[data-testid=vote-up]").last
    vote.click()
    page.wait_for_selector("[data-testid=vote-up][aria-pressed=true]")
    page.locator("[data-testid=report-panel] summary").last.click()
    page.locator("[data-testid=report-type]").last.select_option("feedback")
    page.locator("[data-testid=report-reason]").last.fill(f"checking reports {marker}")
    page.locator("[data-testid=report-submit]").last.click()
    page.wait_for_selector("[data-testid=report-sent]")

    # two drafts side by side; "Use this one" continues with the picked draft
    page.click("[data-testid=reply-settings] summary")
    page.fill("[data-testid=drafts-input]", "2")
    page.fill("[data-testid=composer-input]", "Another question, please answer twice.")
    page.click("[data-testid=send]")
    page.wait_for_selector("[data-testid=drafts]")
    page.wait_for_selector("[data-testid=pick-draft]", timeout=120_000)
    page.locator("[data-testid=pick-draft]").first.click()
    page.wait_for_selector("[data-testid=composer]")
    assert page.locator("[data-testid=drafts]").count() == 0

    # rename, export, delete
    page.click("[data-testid=chat-actions] summary")
    page.fill("[data-testid=rename-input]", f"Trees {marker}")
    page.click("[data-testid=rename-submit]")
    page.wait_for_selector(f"[data-testid=chat-title]:has-text('Trees {marker}')")
    page.click("[data-testid=chat-actions] summary")
    with page.expect_download() as download:
        page.click("[data-testid=export-md]")
    assert download.value.suggested_filename.endswith(".md")
    page.goto("/chat")
    page.fill("[data-testid=chat-search-input]", marker)
    page.press("[data-testid=chat-search-input]", "Enter")
    page.wait_for_selector(f"[data-testid=chat-link]:has-text('Trees {marker}')")
    page.goto(chat_url)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-testid=chat-actions] summary")
    page.click("[data-testid=delete-chat]")
    page.wait_for_url("**/chat")
    assert page.goto(chat_url).status == 404
    assert csp_errors == []


OpenPage = Callable[..., Any]


def test_chat_in_the_browser(new_page: NewPage, site: Site) -> None:
    page = new_page()
    dev_sign_in(page, f"chatter-{uuid.uuid4().hex[:6]}")
    assert chat_enabled(page), "oasst up serves chat: the nav has a Chat link"
    chat_flow(page)
