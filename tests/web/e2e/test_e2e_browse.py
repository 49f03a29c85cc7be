"""In a real browser: a message that tries to inject script shows as plain text everywhere it appears."""

from __future__ import annotations

import uuid
from typing import Any

from tests.web.e2e.conftest import (
    NewPage,
    Site,
    answer_required_labels,
    backend,
    dev_sign_in,
    open_task,
    review_and_submit,
    task_group,
)

INJECTION = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
# what the page must never contain: a live element that came from the message
LIVE_ELEMENTS = """(root) => [...document.querySelectorAll(root + ' img, ' + root + ' script, ' + root + ' [onerror]')]
    .filter((el) => (el.outerHTML || '').includes('pwned') || el.getAttribute('src') === 'x').length"""


def assert_inert(page: Any, root: str) -> None:
    """The injected markup is visible as text inside ``root``, and nothing of it became an element."""
    page.wait_for_selector(root)
    shown = page.locator(root).first.inner_text()
    assert "<script>window.__pwned=1</script>" in shown and 'onerror="window.__pwned=1"' in shown, shown
    assert page.evaluate(LIVE_ELEMENTS, root) == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_script_in_a_message_renders_inert(new_page: NewPage, site: Site) -> None:
    marker = f"inject-{uuid.uuid4().hex[:8]}"
    prompt = f"{INJECTION} Is this shown as text? {marker}"

    author: Any = new_page()
    dev_sign_in(author, f"mallory-{marker[-4:]}")
    assert open_task(author, "initial_prompt") == "create"
    author.fill("[data-testid=reply-text]", prompt)
    author.click("[data-testid=tab-preview]")  # the preview is rendered by the server and inserted as HTML
    author.wait_for_function("() => document.getElementById('preview').textContent.includes('pwned')")
    assert_inert(author, "[data-testid=preview]")
    author.click("[data-testid=tab-write]")
    author.click("[data-testid=review]")
    author.wait_for_function("() => document.getElementById('review-body').textContent.includes('pwned')")
    assert_inert(author, "[data-testid=review-panel]")
    reply_id = author.locator("input[name=reply_id]").input_value()
    with author.expect_navigation():
        author.click("[data-testid=submit]")
    with backend(site) as api:
        stored = api.get(f"/frontend_messages/{reply_id}").raise_for_status().json()
    assert stored["text"] == prompt  # stored as written: escaping is the job of every page showing it

    # another volunteer reviews it: the task conversation shows it as text
    reviewer: Any = new_page()
    dev_sign_in(reviewer, f"reviewer-{marker[-4:]}")
    shown = open_task(reviewer, "label_initial_prompt")
    for _attempt in range(6):  # prompts of other tests may be waiting for review too: skip those
        assert shown == "label"
        if marker in reviewer.locator("[data-testid=conversation]").inner_text():
            break
        reviewer.click("[data-testid=skip]")
        with reviewer.expect_navigation():
            reviewer.click("[data-testid=skip-submit]")
        shown = task_group(reviewer)  # skipping leads straight to the next task of the kind
    else:
        raise AssertionError("the prompt never came up for review")
    assert_inert(reviewer, "[data-testid=conversation]")
    answer_required_labels(reviewer)
    review_and_submit(reviewer)

    # and on the message's own page, where the reader can react to it
    reviewer.goto(f"/messages/{stored['id']}")
    assert_inert(reviewer, "[data-testid=current-message]")
    assert reviewer.locator("[data-testid=current-message]").get_attribute("data-message-id") == stored["id"]
    with reviewer.expect_navigation():
        reviewer.click("[data-testid=current-message] [data-testid=emoji-thumbs_up]")
    current = reviewer.locator("[data-testid=current-message]")
    assert current.locator("[data-testid=emoji-thumbs_up]").get_attribute("aria-pressed") == "true"
    assert current.locator("[data-testid=emoji-count-thumbs_up]").inner_text().strip() == "1"
    assert_inert(reviewer, "[data-testid=current-message]")

    # the author's own list of messages
    author.goto("/messages")
    assert_inert(author, "[data-testid=own-messages]")
