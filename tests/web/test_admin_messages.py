"""The admin area's message tools (search, delete/undelete, edit with history, halt/resume), the flagged
queue, the trollboard and the status pages, over the real backend."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from tests.web.conftest import Browser, csrf
from tests.web.test_admin import API, backend_user, signed_in, volunteer, write_prompt


def post_action(client: TestClient, message_id: str, action: str) -> Any:
    page = client.get(f"/admin/messages/{message_id}")
    return client.post(f"/admin/messages/{message_id}/{action}", data={"csrf_token": csrf(page)})


def tree_state(app_client: TestClient, message_id: str) -> str:
    return str(app_client.get(f"{API}/messages/{message_id}/tree/state").json()["state"])


def test_message_search_finds_by_text(browser: Browser, app_client: TestClient) -> None:
    writer = volunteer(app_client, "writer")
    otter = write_prompt(app_client, writer, "How do sea otters keep warm?")
    badger = write_prompt(app_client, writer, "Why do honey badgers fear nothing?")
    mia = signed_in(browser, "mia", "moderator")

    everything = mia.get("/admin/messages")
    assert (
        f'data-message-id="{otter}"' in everything.text and f'data-message-id="{badger}"' in everything.text
    )
    found = mia.get("/admin/messages", params={"q": "otters warm"})
    assert f'data-message-id="{otter}"' in found.text
    assert f'data-message-id="{badger}"' not in found.text
    assert ">Writer<" in found.text  # the author, linked to their admin page
    other_lang = mia.get("/admin/messages", params={"q": "otters", "lang": "de"})
    assert 'data-testid="no-messages"' in other_lang.text


def test_delete_and_undelete_change_the_backend_flag(browser: Browser, app_client: TestClient) -> None:
    writer = volunteer(app_client, "writer")
    message_id = write_prompt(app_client, writer, "Please delete me later")
    mia = signed_in(browser, "mia", "moderator")

    deleted = post_action(mia, message_id, "delete")
    assert deleted.status_code == 200 and deleted.url.params["done"] == "deleted"
    assert app_client.get(f"{API}/messages/{message_id}").json()["deleted"] is True
    assert 'data-deleted="true"' in deleted.text and 'data-testid="undelete"' in deleted.text
    hidden = mia.get("/admin/messages", params={"q": "delete later"})
    assert f'data-message-id="{message_id}"' not in hidden.text
    shown = mia.get("/admin/messages", params={"q": "delete later", "include_deleted": "true"})
    assert f'data-message-id="{message_id}"' in shown.text and 'data-testid="deleted-badge"' in shown.text

    restored = post_action(mia, message_id, "undelete")
    assert restored.url.params["done"] == "undeleted"
    assert app_client.get(f"{API}/messages/{message_id}").json()["deleted"] is False
    assert 'data-deleted="false"' in restored.text and 'data-testid="delete"' in restored.text


def test_edit_previews_then_saves_a_revision(browser: Browser, app_client: TestClient) -> None:
    writer = volunteer(app_client, "writer")
    message_id = write_prompt(app_client, writer, "Teh original text")
    mia = signed_in(browser, "mia", "moderator")
    before = mia.get(f"/admin/messages/{message_id}")
    assert 'data-testid="no-revisions"' in before.text

    form = mia.get(f"/admin/messages/{message_id}/edit")
    assert "Teh original text</textarea>" in form.text
    preview = mia.post(
        f"/admin/messages/{message_id}/edit",
        data={"csrf_token": csrf(form), "text": "The **fixed** text", "action": "preview"},
    )
    assert preview.status_code == 200
    assert re.search(r'data-testid="preview">\s*<p>The <strong>fixed</strong> text</p>', preview.text)
    assert app_client.get(f"{API}/messages/{message_id}").json()["text"] == "Teh original text"

    saved = mia.post(
        f"/admin/messages/{message_id}/edit",
        data={"csrf_token": csrf(preview), "text": "The **fixed** text", "action": "save"},
    )
    assert saved.url.path == f"/admin/messages/{message_id}" and saved.url.params["done"] == "edited"
    stored = app_client.get(f"{API}/messages/{message_id}").json()
    assert stored["text"] == "The **fixed** text" and stored["edited"] is True
    history = saved.text.split('id="history-h"')[1].split("</section>")[0]
    assert history.count('data-testid="revision"') == 2
    assert history.index("Teh original text") < history.index("<strong>fixed</strong>")
    assert "<strong>fixed</strong>" in saved.text.split('data-testid="message-text"')[1]

    empty = mia.post(f"/admin/messages/{message_id}/edit", data={"csrf_token": csrf(saved), "text": "  "})
    assert empty.status_code == 422


def test_halt_and_resume_the_tree(browser: Browser, app_client: TestClient) -> None:
    writer = volunteer(app_client, "writer")
    message_id = write_prompt(app_client, writer, "A tree to stop")
    first = tree_state(app_client, message_id)
    assert first != "halted_by_moderator"
    mia = signed_in(browser, "mia", "moderator")
    assert f'data-state="{first}"' in mia.get(f"/admin/messages/{message_id}").text

    halted = post_action(mia, message_id, "halt")
    assert halted.url.params["done"] == "halted"
    assert tree_state(app_client, message_id) == "halted_by_moderator"
    assert 'data-state="halted_by_moderator"' in halted.text and 'data-testid="resume"' in halted.text
    counts = mia.get("/admin")
    assert re.search(r'data-testid="state-halted_by_moderator">1<', counts.text)

    resumed = post_action(mia, message_id, "resume")
    assert resumed.url.params["done"] == "resumed"
    assert tree_state(app_client, message_id) == first
    assert 'data-testid="halt"' in resumed.text


def test_message_page_shows_the_whole_tree(browser: Browser, app_client: TestClient) -> None:
    writer = volunteer(app_client, "writer")
    message_id = write_prompt(app_client, writer, "Root of a *small* tree")
    mia = signed_in(browser, "mia", "moderator")
    page = mia.get(f"/admin/messages/{message_id}")
    assert page.status_code == 200
    tree = page.text.split('data-testid="tree"')[1]
    assert tree.count('data-testid="tree-message"') == 1
    assert "<em>small</em>" in tree
    assert mia.get("/admin/messages/00000000-0000-0000-0000-000000000000").status_code == 404


def report(app_client: TestClient, message_id: str, reporter: dict[str, str]) -> None:
    body = {
        "type": "text_labels",
        "message_id": message_id,
        "labels": {"spam": 1.0},
        "text": "this is an advert",
        "is_report": True,
        "user": reporter,
    }
    app_client.post(f"{API}/text_labels/", json=body).raise_for_status()


def test_flagged_queue_lists_reports_until_processed(browser: Browser, app_client: TestClient) -> None:
    writer = volunteer(app_client, "writer")
    reporter = volunteer(app_client, "reporter")
    message_id = write_prompt(app_client, writer, "Buy cheap watches at example.com")
    mia = signed_in(browser, "mia", "moderator")
    assert 'data-testid="queue-empty"' in mia.get("/admin/flagged").text

    report(app_client, message_id, reporter)
    queue = mia.get("/admin/flagged")
    assert f'data-message-id="{message_id}"' in queue.text
    assert "Buy cheap watches" in queue.text
    assert "1 flagged message to review" in mia.get("/admin").text

    done = mia.post(f"/admin/flagged/{message_id}/processed", data={"csrf_token": csrf(queue)})
    assert done.url.path == "/admin/flagged" and done.url.params["done"] == "processed"
    assert f'data-message-id="{message_id}"' not in done.text
    processed = app_client.get(f"{API}/admin/flagged_messages", params={"processed": True}).json()
    assert [f["message_id"] for f in processed] == [message_id]


def test_trollboard_shows_reported_users(browser: Browser, app_client: TestClient) -> None:
    writer = volunteer(app_client, "writer")
    reporter = volunteer(app_client, "reporter")
    message_id = write_prompt(app_client, writer, "Something rude")
    report(app_client, message_id, reporter)
    app_client.post(f"{API}/leaderboards/update").raise_for_status()
    mia = signed_in(browser, "mia", "moderator")
    record = backend_user(app_client, "Writer")

    board = mia.get("/admin/trollboard", params={"time_frame": "day"})
    assert board.status_code == 200
    row = board.text.split(f'data-user-id="{record["user_id"]}"')[1].split("</tr>")[0]
    assert re.search(r'data-testid="red-flags">1<', row)
    banned_only = mia.get("/admin/trollboard", params={"time_frame": "day", "enabled": "false"})
    assert f'data-user-id="{record["user_id"]}"' not in banned_only.text
    assert mia.get("/admin/trollboard", params={"time_frame": "century"}).status_code == 422


def test_status_and_overview_show_the_backend_numbers(browser: Browser, app_client: TestClient) -> None:
    writer = volunteer(app_client, "writer")
    for n in range(3):
        write_prompt(app_client, writer, f"Prompt number {n}")
    stats = app_client.get(f"{API}/stats/").json()
    assert stats["all"] == 3
    mia = signed_in(browser, "mia", "moderator")
    for path in ("/admin/status", "/admin"):
        page = mia.get(path)
        assert re.search(r'data-testid="stat-all">3<', page.text), path
        assert re.search(rf'data-testid="stat-trees">{stats["message_trees"]}<', page.text), path
    status = mia.get("/admin/status")
    assert re.search(r'data-testid="lang-en">3<', status.text)
    assert 'data-testid="available-initial_prompt"' in status.text
    assert "message_size_limit" in status.text  # the public settings
