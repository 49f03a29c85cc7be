"""In a real browser: doing tasks. Ten random tasks by several people, labels, skipping, the empty state."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from sqlalchemy import create_engine, text

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

QUESTIONS = [
    "How do tides work, and why are there two of them every day in most places on the coast?",
    "What should I pack for a three day hike in the mountains in early autumn?",
    "Can you explain how a bicycle stays upright while it is moving forward?",
    "Why is the sky blue during the day but red and orange at sunset?",
    "How can I keep basil growing on a windowsill through the winter?",
]


def message_totals(site: Site) -> tuple[int, int, int]:
    """(messages, reviews, ranking votes) over every message the backend holds."""
    with backend(site) as api:
        messages = api.get("/messages/", params={"max_count": 1000}).raise_for_status().json()
    reviews = sum(m["review_count"] or 0 for m in messages)
    votes = sum(m["ranking_count"] or 0 for m in messages)
    return len(messages), reviews, votes


def query(site: Site, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(site.database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()


def write_text(page: Any, words: str) -> None:
    page.fill("[data-testid=reply-text]", words)
    assert int(page.locator("[data-testid=word-count]").inner_text()) == len(words.split())


def do_shown_task(page: Any, group: str, n: int) -> int:
    """Does the task on the page the way a volunteer would; returns the number of replies it ranked."""
    ranked = 0
    if group == "create":
        write_text(page, f"{QUESTIONS[n % len(QUESTIONS)]} (answer number {n}, {uuid.uuid4().hex[:6]})")
    elif group == "rank":
        ranked = page.locator("[data-testid=rank-list] > .rank-item").count()
        # either the ▲ button moves the last reply up one, or the order stays as it came (the page then
        # asks to confirm that this really is the ranking)
        if n % 2:
            page.locator("[data-testid=rank-list] > .rank-item").last.locator(".move-up").click()
    else:
        answer_required_labels(page)
    review_and_submit(page)
    error = page.locator("[data-testid=task-error]")
    assert not error.count(), error.inner_text()
    return ranked


def test_ten_random_tasks_by_several_people_across_all_kinds(new_page: NewPage, site: Site) -> None:
    people = []
    for i in range(4):
        page: Any = new_page()
        dev_sign_in(page, f"volunteer-{i}-{uuid.uuid4().hex[:4]}")
        people.append(page)
    messages0, reviews0, votes0 = message_totals(site)
    done: Counter[str] = Counter()
    ranked_replies = 0
    for turn in range(60):
        if sum(done.values()) >= 10 and {"create", "rank", "label"} <= set(done):
            break
        page = people[turn % len(people)]
        # after a submit the page already shows this person's next random task
        showing = page.url.endswith("/tasks/random") and page.locator("[data-testid=task-form]").count()
        group = task_group(page) if showing else open_task(page, "random")
        if group == "empty":
            continue
        ranked_replies += do_shown_task(page, group, sum(done.values()))
        assert page.url.endswith("/tasks/random")
        done[group] += 1
    assert sum(done.values()) >= 10 and {"create", "rank", "label"} <= set(done), done
    messages, reviews, votes = message_totals(site)
    assert messages - messages0 == done["create"]
    assert reviews - reviews0 == done["label"]
    assert votes - votes0 == ranked_replies


def test_labels_are_answered_with_keys_and_stored(new_page: NewPage, site: Site) -> None:
    author: Any = new_page()
    dev_sign_in(author, f"label-author-{uuid.uuid4().hex[:4]}")
    assert open_task(author, "initial_prompt") == "create"
    marker = f"label-me-{uuid.uuid4().hex[:8]}"
    write_text(
        author, f"Which three books would you recommend to someone who wants to learn cooking? {marker}"
    )
    review_and_submit(author)
    labeller: Any = new_page()
    dev_sign_in(labeller, f"labeller-{uuid.uuid4().hex[:4]}")
    for _attempt in range(6):  # prompts of earlier tests may be waiting for review too: skip those
        assert open_task(labeller, "label_initial_prompt") == "label"
        if marker in labeller.locator("[data-testid=conversation]").inner_text():
            break
        labeller.click("[data-testid=skip]")
        with labeller.expect_navigation():
            labeller.click("[data-testid=skip-submit]")
    else:
        raise AssertionError("the new prompt never came up for review")
    task_id = labeller.locator("[data-testid=task-id]").inner_text()
    assert labeller.locator(".message.highlighted").inner_text().count(marker) == 1

    # Review with a required question unanswered is refused in the page
    labeller.click("[data-testid=review]")
    assert labeller.locator("[data-testid=client-error]").is_visible()
    assert labeller.locator("[data-testid=review-panel]").is_hidden()

    labeller.locator("[data-testid=label-spam]").focus()
    labeller.keyboard.press("n")
    assert labeller.locator("[data-testid=label-spam-no]").is_checked()
    labeller.locator("[data-testid=label-quality]").focus()
    labeller.keyboard.press("4")
    assert labeller.locator("[data-testid=label-quality-4]").is_checked()
    labeller.locator("[data-testid=label-humor-2]").check()
    labeller.click("[data-testid=review]")
    review = labeller.locator("[data-testid=review-panel]")
    review.wait_for(state="visible")
    assert len(review.locator("li").all()) == 3
    with labeller.expect_navigation():
        labeller.click("[data-testid=submit]")

    rows = query(site, "SELECT labels FROM text_labels WHERE task_id = :t", t=uuid.UUID(task_id))
    assert len(rows) == 1
    labels = rows[0][0]
    assert labels["spam"] == 0 and labels["quality"] == 0.75 and labels["humor"] == 0.25
    assert all(value == 0 for name, value in labels.items() if name not in ("spam", "quality", "humor"))
    with backend(site) as api:
        prompts = api.get("/messages/", params={"max_count": 50, "only_roots": True}).json()
    prompt = next(m for m in prompts if marker in m["text"])
    assert prompt["review_count"] == 1 and prompt["review_result"] is True  # accepted: not spam


def test_skip_with_a_reason(new_page: NewPage, site: Site) -> None:
    page: Any = new_page()
    dev_sign_in(page, f"skipper-{uuid.uuid4().hex[:4]}")
    assert open_task(page, "initial_prompt") == "create"
    skipped = page.locator("[data-testid=task-id]").inner_text()
    page.keyboard.press("Alt+s")  # the shortcut opens the skip form with the reason in focus
    reason = page.locator("[data-testid=skip-reason]")
    reason.wait_for(state="visible")
    assert reason.evaluate("el => el === document.activeElement")
    reason.select_option("unclear")
    page.fill("[data-testid=skip-text]", "what should the prompt be about?")
    with page.expect_navigation():
        page.click("[data-testid=skip-submit]")
    assert task_group(page) == "create"
    assert page.locator("[data-testid=task-id]").inner_text() != skipped
    rows = query(site, "SELECT done, skipped, skip_reason FROM task WHERE id = :t", t=uuid.UUID(skipped))
    assert rows == [(False, True, "The task or the message is unclear: what should the prompt be about?")]


def test_empty_state_links_to_the_other_kinds(new_page: NewPage) -> None:
    page: Any = new_page()
    dev_sign_in(page, f"empty-{uuid.uuid4().hex[:4]}")
    with page.expect_navigation():
        page.select_option("#lang-select", "es")  # nobody writes Spanish in these tests: nothing to rank
    assert page.locator("html").get_attribute("lang") == "es"
    assert open_task(page, "rank_assistant_replies") == "empty"
    others = page.locator("[data-testid=no-tasks] a[data-testid^=other-task-]")
    slugs = [str(a.get_attribute("data-testid")).removeprefix("other-task-") for a in others.all()]
    assert "rank_assistant_replies" not in slugs and {"initial_prompt", "label_initial_prompt"} <= set(slugs)
    page.click("[data-testid=other-task-initial_prompt]")
    assert task_group(page) == "create"
    assert page.locator("[data-testid=task-form]").get_attribute("data-lang") == "es"
