"""Browsing messages: recent ones by language, your own page by page, the tree view, reactions, reports,
labels, and that what volunteers wrote can never run as script."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from oasst.backend.db import Database
from oasst.backend.models import Message, TextLabels, User
from tests.backend.factories import client_for_key, make_db_user, make_message, make_tree
from tests.conftest import Keys
from tests.web.conftest import Browser, csrf, dev_sign_in

MESSAGE_ID = re.compile(r'data-message-id="([0-9a-f-]{36})"')


@pytest.fixture
def api(backend_app: FastAPI, keys: Keys) -> Iterator[TestClient]:
    """The backend's own HTTP API, to check what the website stored."""
    with TestClient(backend_app, headers={"X-API-Key": keys.trusted}) as client:
        yield client


def backend_user_named(database: Database, display_name: str) -> User:
    """The backend user behind a website account (dev sign-ins keep their name as display name)."""
    return database.read(
        lambda s: s.scalars(
            select(User).where(User.display_name == display_name, User.deleted.is_(False))
        ).one()
    )


def strangers_message(database: Database, keys: Keys, text: str | None = None) -> uuid.UUID:
    """A new prompt by a backend user who has no website account."""

    def scene(s: Any) -> uuid.UUID:
        client = client_for_key(s, keys.trusted)
        return make_message(s, client, make_db_user(s, client), text=text).id

    return database.write(scene)


def section(html: str, testid: str) -> str:
    """The part of a page from the element with ``data-testid=testid`` to the end of its <section>."""
    start = html.index(f'data-testid="{testid}"')
    return html[start : html.index("</section>", start)]


def entry(html: str, message_id: object) -> str:
    """The HTML of one message entry on a page."""
    start = html.index(f'id="m-{message_id}"')
    return html[start : html.index("</article>", start)]


def post_form(client: TestClient, page_url: str, action: str, **fields: Any) -> Any:
    page = client.get(page_url)
    return client.post(action, data={"csrf_token": csrf(page), **fields})


def test_recent_messages_are_those_of_the_current_language(
    browser: Browser, database: Database, keys: Keys
) -> None:
    def scene(s: Any) -> None:
        client = client_for_key(s, keys.trusted)
        author = make_db_user(s, client)
        make_tree(s, client, author, lang="en", shape=[], texts=["An English prompt about tea"])
        make_tree(s, client, author, lang="de", shape=[], texts=["Eine deutsche Frage zu Kaffee"])

    database.write(scene)
    reader = browser()
    dev_sign_in(reader, "reader")
    recent = section(reader.get("/messages").text, "recent-messages")
    assert "An English prompt about tea" in recent
    assert "Kaffee" not in recent

    post_form(reader, "/messages", "/lang", lang="de", next="/messages")
    recent = section(reader.get("/messages").text, "recent-messages")
    assert "Eine deutsche Frage zu Kaffee" in recent
    assert "tea" not in recent


def test_own_messages_page_through_without_repeats(browser: Browser, database: Database, keys: Keys) -> None:
    writer = browser()
    dev_sign_in(writer, "writer")
    me = backend_user_named(database, "writer")

    def scene(s: Any) -> list[uuid.UUID]:
        client = client_for_key(s, keys.trusted)
        other = make_db_user(s, client)
        make_message(s, client, other, text="somebody else's prompt")
        return [make_message(s, client, s.get(User, me.id), text=f"mine {i}").id for i in range(23)]

    mine = database.write(scene)
    seen: list[str] = []
    url: str | None = "/messages"
    pages = 0
    while url is not None:
        page = writer.get(url)
        own = section(page.text, "own-messages")
        assert "somebody else" not in own
        seen += MESSAGE_ID.findall(own)
        found = re.search(r'href="([^"]+)" rel="next"', own)
        url = found.group(1).replace("&amp;", "&") if found else None
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 23
    assert seen == [str(m) for m in reversed(mine)]  # newest first

    first_page = writer.get("/messages")
    older = re.search(r'href="([^"]+)" rel="next"', first_page.text)
    assert older
    second = writer.get(older.group(1).replace("&amp;", "&"))
    newer = re.search(r'href="([^"]+)" rel="prev"', section(second.text, "own-messages"))
    assert newer
    back = writer.get(newer.group(1).replace("&amp;", "&"))
    assert MESSAGE_ID.findall(section(back.text, "own-messages")) == seen[:10]


def test_the_tree_view_shows_the_whole_tree_and_highlights_the_message(
    browser: Browser, database: Database, keys: Keys
) -> None:
    def scene(s: Any) -> tuple[list[uuid.UUID], uuid.UUID]:
        client = client_for_key(s, keys.trusted)
        tree = make_tree(s, client, make_db_user(s, client), texts=[f"text {i}" for i in range(6)])
        return [m.id for m in tree.messages], tree.at(0, 0).id

    ids, target = database.write(scene)
    reader = browser()
    dev_sign_in(reader, "reader")
    page = reader.get(f"/messages/{target}")
    assert page.status_code == 200
    tree = section(page.text, "message-tree")
    assert set(MESSAGE_ID.findall(tree)) == {str(i) for i in ids}
    highlighted = re.findall(r'data-testid="current-message"\s+data-message-id="([0-9a-f-]+)"', tree)
    assert highlighted == [str(target)]
    assert 'aria-current="true"' in entry(page.text, target)
    assert 'aria-current="true"' not in entry(page.text, ids[0])
    # threaded: the highlighted reply sits inside the root's list item, after the root
    assert tree.index(f'id="m-{ids[0]}"') < tree.index(f'id="m-{target}"')
    assert '<script src="/static/messages.js">' in page.text

    assert reader.get(f"/messages/{uuid.uuid4()}").status_code == 404
    assert reader.get("/messages/not-an-id").status_code == 404


def test_thumbs_up_toggles_and_reaches_the_backend(
    browser: Browser, database: Database, keys: Keys, api: TestClient
) -> None:
    message_id = strangers_message(database, keys)
    fan = browser()
    dev_sign_in(fan, "fan")
    url = f"/messages/{message_id}"

    liked = post_form(fan, url, f"{url}/emoji", emoji="+1")
    assert liked.status_code == 200 and liked.url.path == url
    assert api.get(f"/api/v1/messages/{message_id}").json()["emojis"] == {"+1": 1}
    mine = entry(liked.text, message_id)
    assert re.search(r'data-testid="emoji-thumbs_up"\s+aria-pressed="true"', mine)
    assert re.search(r'data-testid="emoji-count-thumbs_up">1<', mine)

    unliked = post_form(fan, url, f"{url}/emoji", emoji="+1")
    assert api.get(f"/api/v1/messages/{message_id}").json()["emojis"].get("+1", 0) == 0
    assert re.search(r'data-testid="emoji-count-thumbs_up">0<', entry(unliked.text, message_id))

    refused = post_form(fan, url, f"{url}/emoji", emoji="_skip_reply")
    assert refused.status_code == 422


def test_authors_cannot_react_to_their_own_message(
    browser: Browser, database: Database, keys: Keys, api: TestClient
) -> None:
    author = browser()
    dev_sign_in(author, "author")
    me = backend_user_named(database, "author")
    message_id = database.write(
        lambda s: make_message(s, client_for_key(s, keys.trusted), s.get(User, me.id), text="my prompt").id
    )
    url = f"/messages/{message_id}"
    own = entry(author.get(url).text, message_id)
    assert 'data-testid="badge-author"' in own
    assert re.search(r'data-testid="emoji-thumbs_up"[^>]*\sdisabled', own)

    answer = post_form(author, url, f"{url}/emoji", emoji="+1")
    assert answer.status_code == 403
    assert api.get(f"/api/v1/messages/{message_id}").json()["emojis"] == {}


def test_a_report_is_stored_in_the_backend(browser: Browser, database: Database, keys: Keys) -> None:
    message_id = strangers_message(database, keys)
    reporter = browser()
    dev_sign_in(reporter, "reporter")
    url = f"/messages/{message_id}"
    assert post_form(reporter, url, f"{url}/report", text="   ").status_code == 422

    sent = post_form(reporter, url, f"{url}/report", text="This reply insults people.")
    assert sent.status_code == 200 and 'data-testid="report-sent"' in sent.text
    me = backend_user_named(database, "reporter")
    rows = database.read(
        lambda s: list(s.scalars(select(TextLabels).where(TextLabels.message_id == message_id)))
    )
    assert [(r.user_id, r.is_report, r.text) for r in rows] == [(me.id, True, "This reply insults people.")]
    emojis = database.read(lambda s: s.get(Message, message_id).emojis)  # type: ignore[union-attr]
    assert emojis.get("red_flag") == 1


def test_labels_are_stored_as_the_readers_own(browser: Browser, database: Database, keys: Keys) -> None:
    message_id = strangers_message(database, keys)
    labeller = browser()
    dev_sign_in(labeller, "labeller")
    url = f"/messages/{message_id}"
    page = labeller.get(url)
    assert 'data-testid="label-spam"' in page.text  # a yes/no label of an initial prompt
    assert 'data-testid="label-pii"' in page.text  # a flag
    assert 'data-testid="label-quality"' in page.text  # a likert scale

    fields = {"label-spam": "0", "label-pii": "1", "label-quality": "5"}
    saved = labeller.post(f"{url}/labels", data={"csrf_token": csrf(page), **fields})
    assert saved.status_code == 200 and 'data-testid="labels-sent"' in saved.text
    me = backend_user_named(database, "labeller")
    row = database.read(
        lambda s: s.scalars(select(TextLabels).where(TextLabels.message_id == message_id)).one()
    )
    assert row.user_id == me.id and not row.is_report
    assert row.labels["spam"] == 0.0 and row.labels["pii"] == 1.0 and row.labels["quality"] == 1.0
    assert row.labels["not_appropriate"] == 0.0  # an unticked flag says "no"

    nothing = labeller.post(f"{url}/labels", data={"csrf_token": csrf(page)})
    assert nothing.status_code == 422


def test_message_text_can_never_run_as_script(browser: Browser, database: Database, keys: Keys) -> None:
    evil = '<script>alert(1)</script> <img src=x onerror="alert(2)"> [x](javascript:alert(3))'
    message_id = strangers_message(database, keys, text=evil)
    reader = browser()
    dev_sign_in(reader, "reader")
    for url in (f"/messages/{message_id}", "/messages"):
        body = entry(reader.get(url).text, message_id)
        assert "<script" not in body
        assert "<img" not in body
        assert not re.search(r"<[^>]+\sonerror=", body)
        assert 'href="javascript:' not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_moderators_see_deleted_and_spam_messages_others_do_not(
    browser: Browser, database: Database, keys: Keys
) -> None:
    def scene(s: Any) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        client = client_for_key(s, keys.trusted)
        author = make_db_user(s, client)
        tree = make_tree(s, client, author, shape=[[], []])
        gone = tree.at(1)
        gone.deleted = True
        tree.at(0).review_result = False
        return tree.root.id, tree.at(0).id, gone.id

    root, spam, gone = database.write(scene)
    mod = browser()
    dev_sign_in(mod, "mod", role="moderator")
    page = mod.get(f"/messages/{root}").text
    assert 'data-testid="badge-deleted"' in entry(page, gone)
    assert 'data-testid="badge-spam"' in entry(page, spam)
    assert mod.get(f"/messages/{gone}").status_code == 200

    reader = browser()
    dev_sign_in(reader, "reader")
    page = reader.get(f"/messages/{root}").text
    assert f'id="m-{gone}"' not in page
    assert 'data-testid="badge-spam"' not in page
    assert reader.get(f"/messages/{gone}").status_code == 404
