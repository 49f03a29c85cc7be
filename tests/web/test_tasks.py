"""Doing tasks on the website: every task type is fetched, submitted and stored by the real backend.

One small tree is grown through the website by several signed-in people: a prompt, its review, two
assistant replies, their reviews, a user reply and its review, then a ranking of the two replies.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from oasst.backend.db import Database
from oasst.backend.models import Message, MessageReaction, Task, TextLabels
from oasst.backend.settings import Settings
from tests.conftest import make_test_settings
from tests.web.conftest import Browser, csrf, dev_sign_in

HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)"[^>]* value="([^"]*)"')


@pytest.fixture
def settings(database_url: str) -> Settings:
    tree = {"goal_tree_size": 4, "num_reviews_initial_prompt": 1, "num_reviews_reply": 1,
            "num_required_rankings": 1, "max_children_count": 2, "max_tree_depth": 3,
            "max_active_trees": 1, "p_activate_backlog_tree": 0.0,
            "p_full_labeling_review_prompt": 1.0, "p_full_labeling_review_reply_prompter": 1.0,
            "p_full_labeling_review_reply_assistant": 1.0}  # fmt: skip
    return make_test_settings(database_url, tree_manager=tree, rate_limits={"enabled": False})


class TaskPage:
    """A task page as the browser got it, with the hidden fields its form posts back."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        self.response = response
        self.text = response.text
        self.fields = {name: html.unescape(value) for name, value in HIDDEN.findall(self.text)}
        self.task: dict[str, Any] = json.loads(self.fields["task_json"])

    @property
    def id(self) -> str:
        return str(self.task["id"])


class Person:
    def __init__(self, browser: Browser, name: str) -> None:
        self.client: TestClient = browser()
        dev_sign_in(self.client, name)

    def open(self, slug: str) -> TaskPage:
        return TaskPage(self.client.get(f"/tasks/{slug}"))

    def submit(self, page: TaskPage, **fields: str) -> httpx.Response:
        keep = ("csrf_token", "slug", "task_json", "frontend_id", "reply_id", "unchanged_ok")
        data = {name: page.fields[name] for name in keep}
        return self.client.post(f"/tasks/{page.id}/submit", data={**data, **fields}, follow_redirects=False)

    def skip(self, page: TaskPage, **fields: str) -> httpx.Response:
        data = {"csrf_token": page.fields["csrf_token"], "slug": page.fields["slug"], **fields}
        return self.client.post(f"/tasks/{page.id}/skip", data=data, follow_redirects=False)


def messages(database: Database) -> list[Message]:
    return list(database.read(lambda s: s.scalars(select(Message).order_by(Message.created_date)).all()))


def task_row(database: Database, task_id: str) -> Task:
    row = database.read(lambda s: s.get(Task, uuid.UUID(task_id)))
    assert row is not None
    return row


def label_all(
    person: Person, slug: str, *, spam: str = "0", scale: str = "3"
) -> tuple[TaskPage, dict[str, float]]:
    """Open a label task and answer it fully: spam as given, every scale at ``scale``, no flags."""
    page = person.open(slug)
    assert page.task["type"] == slug
    fields = {"label.spam": spam}
    expected = {"spam": float(spam)}
    for label in page.task["labels"]:
        if label["widget"] == "likert":
            fields[f"label.{label['name']}"] = scale
            expected[label["name"]] = int(scale) / 4
        elif label["widget"] == "flag":
            expected[label["name"]] = 0.0
    answer = person.submit(page, **fields)
    assert answer.status_code == 303, answer.text
    return page, expected


def stored_labels(database: Database, task_id: str) -> dict[str, float]:
    row = database.read(
        lambda s: s.scalars(select(TextLabels).where(TextLabels.task_id == uuid.UUID(task_id))).one()
    )
    return dict(row.labels)


def test_a_tree_grows_through_every_task_type(browser: Browser, database: Database) -> None:
    alice, bob, carol, dave, erin, frank = (
        Person(browser, n) for n in ("alice", "bob", "carol", "dave", "erin", "frank")
    )

    prompt = alice.open("initial_prompt")
    assert prompt.task["type"] == "initial_prompt"
    assert 'data-testid="tutorial"' in prompt.text and 'data-testid="guidelines"' in prompt.text
    answer = alice.submit(prompt, text="How do I keep **sourdough** alive on holiday?")
    assert answer.status_code == 303 and answer.headers["location"] == "/tasks/initial_prompt"
    (root,) = messages(database)
    assert root.text == "How do I keep **sourdough** alive on holiday?" and root.role == "prompter"
    assert root.parent_id is None
    assert 'data-testid="tutorial"' not in alice.client.get("/tasks/initial_prompt").text  # one task done

    review, expected = label_all(bob, "label_initial_prompt")
    assert 'data-testid="conversation"' in review.text and "<strong>sourdough</strong>" in review.text
    assert stored_labels(database, review.id) == expected

    for person, text in ((carol, "Feed it and put it in the fridge."), (dave, "Dry some of it on paper.")):
        reply = person.open("assistant_reply")
        assert reply.task["conversation"]["messages"][0]["text"] == root.text
        assert person.submit(reply, text=text).status_code == 303
    replies = [m for m in messages(database) if m.parent_id == root.id]
    assert sorted(m.text for m in replies) == [
        "Dry some of it on paper.",
        "Feed it and put it in the fridge.",
    ]
    assert all(m.role == "assistant" for m in replies)

    for _ in replies:
        page, expected = label_all(erin, "label_assistant_reply", scale="4")
        assert stored_labels(database, page.id) == expected

    follow_up = alice.open("prompter_reply")
    assert len(follow_up.task["conversation"]["messages"]) == 2
    assert alice.submit(follow_up, text="And for three weeks?").status_code == 303
    (user_reply,) = [m for m in messages(database) if m.text == "And for three weeks?"]
    assert user_reply.role == "prompter" and user_reply.parent_id in {m.id for m in replies}
    label_all(bob, "label_prompter_reply")

    ranking = frank.open("rank_assistant_replies")
    shown = [m["text"] for m in ranking.task["reply_messages"]]
    assert 'data-testid="drag-handle-0"' in ranking.text and 'data-testid="drag-handle-1"' in ranking.text
    refused = frank.submit(ranking, ranking="0,1", typed_order="1,1")
    assert refused.status_code == 422 and 'data-testid="task-error"' in refused.text
    assert frank.submit(ranking, ranking="1,0").status_code == 303
    ballot = database.read(
        lambda s: s.scalars(
            select(MessageReaction).where(MessageReaction.task_id == uuid.UUID(ranking.id))
        ).one()
    )
    assert ballot.payload["ranking"] == [1, 0]
    best = database.read(lambda s: s.scalars(select(Message).where(Message.text == shown[1])).one())
    assert best.rank == 0  # the one ballot decides: the reply put on top ranks first

    empty = frank.client.get("/tasks/rank_prompter_replies")
    assert 'data-testid="no-tasks"' in empty.text and 'data-testid="other-task-initial_prompt"' in empty.text


def test_random_task_and_redirect_to_the_same_kind(browser: Browser, database: Database) -> None:
    gina = Person(browser, "gina")
    page = gina.open("random")
    assert page.task["type"] == "initial_prompt"  # an empty backend only needs prompts
    answer = gina.submit(page, text="What is a good first programming language?")
    assert answer.status_code == 303 and answer.headers["location"] == "/tasks/random"
    assert [m.text for m in messages(database)] == ["What is a good first programming language?"]


def test_empty_text_is_refused_and_nothing_is_stored(browser: Browser, database: Database) -> None:
    hank = Person(browser, "hank")
    page = hank.open("initial_prompt")
    answer = hank.submit(page, text="   \n ")
    assert answer.status_code == 422
    assert 'data-testid="task-error"' in answer.text and 'data-error-code="invalid_input"' in answer.text
    assert 'data-testid="task-form"' in answer.text  # the task is shown again to fix it
    assert messages(database) == []
    assert not task_row(database, page.id).ack and not task_row(database, page.id).done


def test_skip_sends_the_reason(browser: Browser, database: Database) -> None:
    ivy = Person(browser, "ivy")
    page = ivy.open("initial_prompt")
    answer = ivy.skip(page, reason="too_hard", reason_text="not my field")
    assert answer.status_code == 303 and answer.headers["location"] == "/tasks/initial_prompt"
    row = task_row(database, page.id)
    assert row.skipped and row.skip_reason == "I don't know enough about this topic: not my field"
    late = ivy.submit(page, text="late")  # a skipped task cannot be submitted any more
    assert late.status_code == 400 and 'data-testid="task-error"' in late.text
    assert messages(database) == []


def test_reloading_the_last_task_shows_it_again(browser: Browser, database: Database) -> None:
    author, reviewer = Person(browser, "jill"), Person(browser, "kurt")
    assert author.submit(author.open("initial_prompt"), text="Why is the sky blue?").status_code == 303
    held = reviewer.open("label_initial_prompt")
    assert held.task["conversation"]["messages"][0]["text"] == "Why is the sky blue?"
    again = reviewer.open("label_initial_prompt")  # a reload: the only prompt is the one already held
    assert again.id == held.id
    assert reviewer.skip(again).status_code == 303
    empty = reviewer.client.get("/tasks/label_initial_prompt")
    assert empty.status_code == 200 and 'data-testid="no-tasks"' in empty.text


def test_mandatory_labels_and_unchanged_answers(browser: Browser, database: Database) -> None:
    jo, kim = Person(browser, "jo"), Person(browser, "kim")
    jo.submit(jo.open("initial_prompt"), text="Explain <script>alert(1)</script> tags, please.")
    page = kim.open("label_initial_prompt")
    assert (
        "<script>alert(1)</script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    )

    missing = kim.submit(page, **{"label.quality": "2"})  # spam is mandatory
    assert missing.status_code == 422 and 'data-error-code="invalid_input"' in missing.text
    assert "Is the message spam?" in missing.text.split('data-testid="task-error"')[1].split("</div>")[0]
    assert 'value="2" data-testid="label-quality-3"' in missing.text.replace(" checked", "")  # kept
    assert database.read(lambda s: s.scalars(select(TextLabels)).all()) == []

    assert kim.submit(page, **{"label.spam": "1", "label.pii": "1"}).status_code == 303
    assert stored_labels(database, page.id)["spam"] == 1.0
    assert stored_labels(database, page.id)["pii"] == 1.0


def test_unchanged_ranking_asks_first_and_moves_work_without_script(
    browser: Browser, database: Database
) -> None:
    people = [Person(browser, n) for n in ("lu", "max", "ned", "ola", "pat", "quin")]
    lu, max_, ned, ola, pat, quin = people
    lu.submit(lu.open("initial_prompt"), text="Name a colour.")
    label_all(max_, "label_initial_prompt")
    ned.submit(ned.open("assistant_reply"), text="Blue.")
    ola.submit(ola.open("assistant_reply"), text="Red.")
    label_all(pat, "label_assistant_reply")
    label_all(pat, "label_assistant_reply")
    lu.submit(lu.open("prompter_reply"), text="Another one?")
    label_all(max_, "label_prompter_reply")

    page = quin.open("rank_assistant_replies")
    asked = quin.submit(page, ranking="0,1")
    assert asked.status_code == 409 and 'data-testid="unchanged-notice"' in asked.text
    moved = quin.submit(page, ranking="0,1", move="1:up")  # the ▲ button of reply 2, without script
    assert (
        moved.status_code == 200
        and 'name="ranking" id="ranking-field" data-testid="ranking" value="1,0"' in moved.text
    )
    assert quin.submit(page, ranking="0,1", unchanged_ok="1").status_code == 303
    ballot = database.read(lambda s: s.scalars(select(MessageReaction)).one())
    assert ballot.payload["ranking"] == [0, 1]


def test_page_errors(browser: Browser) -> None:
    rae = Person(browser, "rae")
    assert rae.client.get("/tasks/no_such_kind").status_code == 404
    empty = rae.client.get("/tasks/rank_assistant_replies")
    assert empty.status_code == 200 and 'data-testid="no-tasks"' in empty.text
    page = rae.open("initial_prompt")
    forged = rae.client.post(
        f"/tasks/{page.id}/submit", data={"text": "x", "task_json": page.fields["task_json"]}
    )
    assert forged.status_code == 403  # no CSRF token
    damaged = rae.submit(page, text="x", task_json="{}")
    assert damaged.status_code == 422


def test_preview_renders_markdown_safely(browser: Browser) -> None:
    sam = Person(browser, "sam")
    page = sam.client.get("/dashboard")
    answer = sam.client.post(
        "/tasks/preview",
        json={"text": "**hi** <script>alert(1)</script> [x](javascript:alert(1))"},
        headers={"X-CSRF-Token": csrf(page)},
    )
    assert answer.status_code == 200
    rendered = answer.json()["html"]
    assert (
        "<strong>hi</strong>" in rendered
        and "<script>" not in rendered
        and 'href="javascript' not in rendered
    )
    assert sam.client.post("/tasks/preview", json={"text": "x"}).status_code == 403


def test_reloading_never_locks_a_person_out(browser: Browser, database: Database) -> None:
    tom = Person(browser, "tom")
    pages = [tom.open("initial_prompt") for _ in range(12)]  # more than the backend's pending-task cap
    assert len({page.id for page in pages}) == 12
    released = [task_row(database, page.id) for page in pages[:8]]
    assert all(row.skipped and row.skip_reason and "left unfinished" in row.skip_reason for row in released)
    assert tom.submit(pages[-1], text="Still here.").status_code == 303
