"""``oasst import``: trees and flat files into the database, idempotent, all or nothing per bad file."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from oasst.backend.db import Database
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import (
    ApiClient,
    Message,
    MessageEmoji,
    MessageReaction,
    MessageTreeState,
    TextLabels,
    TreeState,
    User,
)
from oasst.backend.services.export import ExportOptions, find_user_id, iter_export
from oasst.backend.services.importer import (
    IMPORT_CLIENT_ID,
    ImportOptions,
    ImportSummary,
    exported_to_uuid,
    import_files,
)
from oasst.backend.settings import Settings
from tests.backend.factories import make_client, make_db_user

EVERYTHING = ExportOptions(
    states=("all",), deleted="include", spam="include", synthetic="include", labels=True, events=True
)


def node(
    message_id: str, parent_id: str | None, role: str, replies: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "parent_id": parent_id,
        "user_id": fields.pop("user_id", f"user-of-{message_id}"),
        "created_date": fields.pop("created_date", "2023-02-12T19:06:16.233571+00:00"),
        "text": f"text of {message_id}",
        "role": role,
        "lang": "en",
        "review_count": 3,
        "review_result": True,
        "deleted": False,
        "rank": None,
        "synthetic": False,
        "model_name": None,
        "emojis": {"+1": 2},
        "replies": replies,
        **fields,
    }


def tree(prefix: str, state: str | None = "ready_for_export", **prompt_fields: Any) -> dict[str, Any]:
    """``r → (a1 → p1 → a2), a3``, ids ``<prefix>-r`` etc. (not UUIDs, like an anonymised export)."""
    p1 = node(
        f"{prefix}-p1", f"{prefix}-a1", "prompter", [node(f"{prefix}-a2", f"{prefix}-p1", "assistant", [])]
    )
    a1 = node(f"{prefix}-a1", f"{prefix}-r", "assistant", [p1], rank=0)
    a3 = node(f"{prefix}-a3", f"{prefix}-r", "assistant", [], rank=1)
    prompt = node(f"{prefix}-r", None, "prompter", [a1, a3], **prompt_fields)
    return {"message_tree_id": f"{prefix}-r", "tree_state": state, "prompt": prompt, "origin": None}


def with_reply(reply: dict[str, Any]) -> dict[str, Any]:
    data = tree("z")
    data["prompt"]["replies"].append(reply)
    return data


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def run_import(database: Database, settings: Settings, *paths: Path, **options: Any) -> ImportSummary:
    return import_files(database, paths, cfg=settings.tree_manager, options=ImportOptions(**options))


def count(database: Database, model: Any) -> int:
    return int(database.read(lambda s: s.scalar(select(func.count()).select_from(model))) or 0)


def exported(database: Database, options: ExportOptions = EVERYTHING) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json") for item in iter_export(database, options)]


def read(database: Database, work: Callable[[Session], Any]) -> Any:
    return database.read(work)


def test_trees_are_imported_with_computed_structure(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    summary = run_import(
        database, settings, write_jsonl(tmp_path / "t.jsonl", [tree("x"), tree("y", "growing")])
    )
    assert (summary.trees, summary.skipped, summary.messages, summary.files) == (2, 0, 10, 1)
    root = exported_to_uuid("x-r", "message")
    rows = read(database, lambda s: {m.frontend_message_id: m for m in s.scalars(select(Message))})
    assert rows["x-r"].id == root and rows["x-a2"].message_tree_id == root
    assert [rows[f"x-{n}"].depth for n in ("r", "a1", "p1", "a2", "a3")] == [0, 1, 2, 3, 1]
    assert [rows[f"x-{n}"].children_count for n in ("r", "a1", "p1", "a2", "a3")] == [2, 1, 1, 0, 0]
    assert rows["x-a1"].rank == 0 and rows["x-r"].emojis == {"+1": 2} and rows["x-r"].review_count == 3
    states = read(database, lambda s: {t.message_tree_id: t for t in s.scalars(select(MessageTreeState))})
    done, growing = states[root], states[exported_to_uuid("y-r", "message")]
    assert (done.state, done.active, done.origin, done.lang) == ("ready_for_export", False, "t.jsonl", "en")
    assert (growing.state, growing.active) == (
        "growing",
        True,
    ) and growing.won_prompt_lottery_date is not None
    assert done.goal_tree_size == settings.tree_manager.goal_tree_size
    assert done.max_depth == settings.tree_manager.max_tree_depth


def test_one_import_client_and_system_users_own_everything(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    run_import(database, settings, write_jsonl(tmp_path / "t.jsonl", [tree("x", user_id="shared")]))
    client = read(database, lambda s: s.get(ApiClient, IMPORT_CLIENT_ID))
    assert (client.description, client.trusted) == ("oasst import", False)
    users = read(database, lambda s: {u.username: u for u in s.scalars(select(User))})
    assert set(users) == {
        "oasst import",
        "shared",
        "user-of-x-a1",
        "user-of-x-p1",
        "user-of-x-a2",
        "user-of-x-a3",
    }
    for user in users.values():
        assert (user.auth_method, user.api_client_id, user.show_on_leaderboard) == (
            "system",
            IMPORT_CLIENT_ID,
            False,
        )
    assert users["shared"].display_name == "imported user"
    assert users["shared"].id == exported_to_uuid("shared", "user")
    messages = read(database, lambda s: s.scalars(select(Message)).all())
    assert {m.api_client_id for m in messages} == {IMPORT_CLIENT_ID}


def test_exported_uuid_user_ids_become_the_row_ids(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    mine, taken = str(uuid.uuid4()), database.write(lambda s: make_db_user(s, make_client(s)))
    data = tree("x", user_id=mine)
    data["prompt"]["replies"][1]["user_id"] = str(taken.id)  # a user of another client has this id
    run_import(database, settings, write_jsonl(tmp_path / "t.jsonl", [data]))
    users = read(
        database,
        lambda s: {
            u.username: u.id for u in s.scalars(select(User).where(User.api_client_id == IMPORT_CLIENT_ID))
        },
    )
    assert users[mine] == uuid.UUID(mine)
    assert users[str(taken.id)] != taken.id  # a derived id: the other client's user is not borrowed
    out = exported(database)[0]["prompt"]
    assert out["user_id"] == mine and out["replies"][1]["user_id"] == str(taken.id)


def test_reimport_is_idempotent(database: Database, settings: Settings, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [tree("x"), tree("y")])
    first = run_import(database, settings, path)
    counts = [count(database, model) for model in (Message, MessageTreeState, TextLabels, User)]
    second = run_import(database, settings, path)
    assert (first.trees, second.trees, second.skipped, second.messages) == (2, 0, 2, 0)
    assert [count(database, model) for model in (Message, MessageTreeState, TextLabels, User)] == counts


def test_a_tree_repeated_in_the_file_is_imported_once(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    summary = run_import(database, settings, write_jsonl(tmp_path / "t.jsonl", [tree("x"), tree("x")]))
    assert (summary.trees, summary.skipped) == (1, 1)


def test_non_uuid_ids_map_to_uuid5_and_come_back(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    data = tree("d" * 64)
    data["message_tree_id"] = "t" * 64  # anonymised exports hash the tree id apart from the root's
    run_import(database, settings, write_jsonl(tmp_path / "t.jsonl", [data]))
    ids = read(database, lambda s: s.scalars(select(Message.id)).all())
    assert exported_to_uuid("d" * 64 + "-r", "message") in ids
    out = exported(database)[0]
    assert out["message_tree_id"] == "t" * 64
    assert out["prompt"]["message_id"] == "d" * 64 + "-r"
    assert out["prompt"]["replies"][0]["parent_id"] == "d" * 64 + "-r"
    assert out["prompt"]["user_id"] == "user-of-" + "d" * 64 + "-r"


def test_labels_become_rows_that_average_back(database: Database, settings: Settings, tmp_path: Path) -> None:
    labels = {
        "spam": {"value": 0.1, "count": 3},
        "quality": {"value": 0.625, "count": 2},
        "pii": {"value": 1.0, "count": 1},
    }
    run_import(database, settings, write_jsonl(tmp_path / "t.jsonl", [tree("x", labels=labels)]))
    rows = read(database, lambda s: s.scalars(select(TextLabels).order_by(TextLabels.created_date)).all())
    assert [row.labels for row in rows] == [
        {"spam": 0.1, "quality": 0.625, "pii": 1.0},
        {"spam": 0.1, "quality": 0.625},
        {"spam": 0.1},
    ]
    assert {(row.text, row.task_id, row.is_report) for row in rows} == {("imported", None, False)}
    out = exported(database)[0]["prompt"]["labels"]
    assert out.keys() == labels.keys()
    for name, value in labels.items():
        assert out[name]["count"] == value["count"]
        assert out[name]["value"] == pytest.approx(value["value"], abs=1e-9)


def test_events_become_emoji_and_ranking_rows(database: Database, settings: Settings, tmp_path: Path) -> None:
    data = tree("x")
    data["prompt"]["events"] = {
        "emoji": [
            {"type": "emoji", "user_id": "u1", "emoji": "+1"},
            {"type": "emoji", "user_id": "u2", "emoji": "_skip_reply"},
        ],
        "ranking": [
            {
                "type": "ranking",
                "user_id": "u1",
                "ranking": [1, 0],
                "ranked_message_ids": ["x-a3", "x-a1"],
                "ranking_parent_id": "x-r",
                "message_tree_id": "x-r",
                "not_rankable": False,
            },
            {
                "type": "ranking",
                "user_id": None,
                "ranking": [0, 1],
                "ranked_message_ids": ["x-a1", "x-a3"],
                "ranking_parent_id": "x-r",
                "message_tree_id": "x-r",
                "not_rankable": True,
            },
        ],
        "report": [{"type": "report", "user_id": "u3", "report_type": "spam", "reason": "ads"}],
    }
    run_import(database, settings, write_jsonl(tmp_path / "t.jsonl", [data]))
    assert count(database, MessageEmoji) == 2 and count(database, MessageReaction) == 2
    reactions = read(database, lambda s: s.scalars(select(MessageReaction)).all())
    assert {r.payload_type for r in reactions} == {"RankingReactionPayload"}
    assert {r.message_id for r in reactions} == {exported_to_uuid("x-r", "message")}
    ranking_counts = read(
        database,
        lambda s: {k: v for k, v in s.execute(select(Message.frontend_message_id, Message.ranking_count))},
    )
    assert ranking_counts == {"x-r": 0, "x-a1": 2, "x-p1": 0, "x-a2": 0, "x-a3": 2}
    assert exported(database)[0]["prompt"]["events"] == data["prompt"]["events"]


def test_unknown_fields_are_kept(database: Database, settings: Settings, tmp_path: Path) -> None:
    data = tree("x", CRITERIA={"Relevance": 0.6}, detoxify=None, future={"a": [1, 2]})
    data["prompt"]["replies"][0]["detoxify"] = {
        "toxicity": 0.5,
        "severe_toxicity": 0.1,
        "obscene": 0.0,
        "identity_attack": 0.0,
        "insult": 0.0,
        "threat": 0.25,
        "sexual_explicit": 0.0,
    }
    data["release"] = "oasst2"
    run_import(database, settings, write_jsonl(tmp_path / "t.jsonl", [data]))
    out = exported(database)[0]
    assert out["release"] == "oasst2"
    assert out["prompt"]["CRITERIA"] == {"Relevance": 0.6} and out["prompt"]["future"] == {"a": [1, 2]}
    assert out["prompt"]["detoxify"] is None
    assert out["prompt"]["replies"][0]["detoxify"] == data["prompt"]["replies"][0]["detoxify"]
    assert "CRITERIA" not in out["prompt"]["replies"][0]


def test_gzipped_and_flat_files(database: Database, settings: Settings, tmp_path: Path) -> None:
    rows = []
    for prefix in ("f", "g"):
        stack = [tree(prefix, state=None)["prompt"]]
        while stack:
            row = stack.pop()
            stack.extend(reversed(row.pop("replies")))
            rows.append({**row, "message_tree_id": f"{prefix}-r"})
    single = node("h-r", None, "prompter", [])
    single.pop("replies")
    path = write_jsonl(tmp_path / "flat.jsonl.gz", [*rows, {**single, "message_tree_id": "h-r"}])
    summary = run_import(database, settings, path)
    assert (summary.trees, summary.messages) == (3, 11)
    states = read(
        database,
        lambda s: {
            k: v for k, v in s.execute(select(MessageTreeState.message_tree_id, MessageTreeState.state))
        },
    )
    # like the startup repair: a tree with replies is growing, a lone prompt waits for review
    assert states[exported_to_uuid("f-r", "message")] == TreeState.GROWING
    assert states[exported_to_uuid("h-r", "message")] == TreeState.INITIAL_PROMPT_REVIEW


def test_options_override_state_origin_and_synthetic(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "model.jsonl", [tree("x")])
    run_import(
        database,
        settings,
        path,
        state=TreeState.BACKLOG_RANKING,
        origin="run-7",
        synthetic=True,
        model_name="m-1",
    )
    mts = read(database, lambda s: s.scalars(select(MessageTreeState)).one())
    assert (mts.state, mts.active, mts.origin) == ("backlog_ranking", False, "run-7")
    flags = read(
        database, lambda s: s.execute(select(Message.role, Message.synthetic, Message.model_name)).all()
    )
    assert {(role, synthetic, model) for role, synthetic, model in flags} == {
        ("assistant", True, "m-1"),
        ("prompter", False, None),
    }


def test_the_tree_origin_is_kept_unless_overridden(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    data = tree("x")
    data["origin"] = "hf:oasst2"
    run_import(database, settings, write_jsonl(tmp_path / "t.jsonl", [data]))
    assert exported(database)[0]["origin"] == "hf:oasst2"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "bad.jsonl:3: invalid JSON"),
        (
            json.dumps({"message_tree_id": "z", "prompt": {"message_id": "z"}}),
            "bad.jsonl:3: invalid message tree",
        ),
        (json.dumps(tree("z", state="finished")), "bad.jsonl: tree 3 (z-r): unknown tree_state 'finished'"),
        (
            json.dumps({**tree("z"), "prompt": {**tree("z")["prompt"], "parent_id": "elsewhere"}}),
            "has a parent_id",
        ),
        (json.dumps(with_reply(node("z-a1", "z-r", "assistant", []))), "message z-a1 appears twice"),
        (json.dumps(with_reply(node("z-a9", "z-x", "assistant", []))), "names another parent_id"),
    ],
)
def test_a_bad_line_aborts_and_changes_nothing(
    database: Database, settings: Settings, tmp_path: Path, line: str, expected: str
) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [tree("a")])
    bad = write_jsonl(tmp_path / "bad.jsonl", [tree("b"), tree("c"), line, tree("d")])
    with pytest.raises(OasstError) as caught:
        run_import(database, settings, good, bad, batch_messages=1)
    assert caught.value.error_code == ErrorCode.IMPORT_INVALID_FILE
    assert expected in caught.value.message
    assert count(database, Message) == 0 and count(database, ApiClient) == 0


def test_a_conflicting_message_id_stops_with_a_clear_error(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    run_import(database, settings, write_jsonl(tmp_path / "one.jsonl", [tree("x")]))
    clash = tree("y")
    clash["prompt"]["replies"][1]["message_id"] = "x-a3"
    with pytest.raises(OasstError, match="already exists in another tree"):
        run_import(database, settings, write_jsonl(tmp_path / "two.jsonl", [clash]))
    assert count(database, MessageTreeState) == 1


def test_without_validation_whole_trees_before_a_bad_line_stay(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [tree("a"), tree("b"), "{oops", tree("c")])
    with pytest.raises(OasstError, match=r"bad\.jsonl:3: invalid JSON"):
        run_import(database, settings, bad, validate=False, batch_messages=1)
    assert count(database, MessageTreeState) == 2 and count(database, Message) == 10


def test_imported_users_are_found_by_their_exported_id(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    run_import(database, settings, write_jsonl(tmp_path / "t.jsonl", [tree("x", user_id="f" * 64)]))
    user_id = find_user_id(database, "f" * 64)
    assert user_id == exported_to_uuid("f" * 64, "user")
    rows = exported(database, ExportOptions(user_id=user_id))
    assert [(row["message_id"], row["user_id"]) for row in rows] == [("x-r", "f" * 64)]
