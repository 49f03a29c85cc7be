"""``oasst export``: filters, labels and events, anonymisation, files; and that it streams."""

from __future__ import annotations

import gzip
import json
import random
import tracemalloc
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, update

from oasst.backend.db import Database, make_engine
from oasst.backend.migrate import upgrade
from oasst.backend.models import (
    Base,
    Message,
    MessageEmoji,
    MessageReaction,
    TextLabels,
    TreeState,
    User,
)
from oasst.backend.services.export import ExportOptions, export_to, find_user_id, iter_export
from oasst.backend.settings import Settings
from oasst.data import ExportMessageNode, ExportMessageTree, iter_messages, read_message_trees, read_messages
from tests.backend.factories import Tree, make_client, make_db_user, make_message, make_tree

START = datetime(2023, 1, 1, tzinfo=UTC)
TABLES = Base.metadata.tables


@dataclass
class Scene:
    alice: User
    bob: User
    done: (
        Tree  # ready_for_export, en, 2023-01-01; DEFAULT_SHAPE with one reply deleted, one spam, one pending
    )
    german: Tree  # ready_for_export, de, 2023-03-01, two replies
    growing: Tree  # growing, en
    synthetic: Tree  # ready_for_export with a synthetic reply
    deleted: Message
    spam: Message
    pending: Message


def build_scene(session: Any) -> Scene:
    client = make_client(session, trusted=True)
    alice, bob = make_db_user(session, client, "alice"), make_db_user(session, client, "bob")
    done = make_tree(session, client, [alice, bob], state=TreeState.READY_FOR_EXPORT, start=START)
    german = make_tree(
        session,
        client,
        bob,
        lang="de",
        state=TreeState.READY_FOR_EXPORT,
        shape=[[], []],
        start=START + timedelta(days=59),
    )
    growing = make_tree(
        session, client, alice, state=TreeState.GROWING, shape=[[]], start=START + timedelta(days=1)
    )
    synthetic = make_tree(
        session, client, alice, state=TreeState.READY_FOR_EXPORT, shape=[[]], start=START + timedelta(days=2)
    )
    synthetic.messages[1].synthetic = True
    deleted = done.at(1)  # a leaf
    deleted.deleted = True
    spam = done.at(0, 1)
    spam.review_result = False
    pending = make_message(
        session,
        client,
        bob,
        parent=done.at(0, 0),
        review_result=None,
        created_date=START + timedelta(hours=2),
    )
    done.state.origin = "seed.jsonl"
    session.flush()
    return Scene(alice, bob, done, german, growing, synthetic, deleted, spam, pending)


@pytest.fixture
def scene(database: Database) -> Scene:
    return database.write(build_scene)


def trees(database: Database, **options: Any) -> dict[str, set[str]]:
    """Tree id -> the ids of its exported messages."""
    out = {}
    for item in iter_export(database, ExportOptions(**options)):
        assert isinstance(item, ExportMessageTree)
        out[item.message_tree_id] = {m.message_id for m in iter_messages(item)}
    return out


def rows(database: Database, **options: Any) -> list[ExportMessageNode]:
    items = list(iter_export(database, ExportOptions(**options)))
    assert all(isinstance(item, ExportMessageNode) and item.replies is None for item in items)
    return items  # type: ignore[return-value]


def one_tree(database: Database, tree: Tree, **options: Any) -> ExportMessageTree:
    found = [t for t in iter_export(database, ExportOptions(**options)) if t.message_tree_id == str(tree.id)]
    assert len(found) == 1 and isinstance(found[0], ExportMessageTree)
    return found[0]


def ids(*messages: Message) -> set[str]:
    return {str(m.id) for m in messages}


def test_default_is_accepted_undeleted_human_trees_ready_for_export(database: Database, scene: Scene) -> None:
    done = scene.done
    assert trees(database) == {
        str(done.id): ids(done.root, done.at(0), done.at(0, 0), done.at(0, 0, 0)),
        str(scene.german.id): ids(*scene.german.messages),
    }


def test_state_filters(database: Database, scene: Scene) -> None:
    assert set(trees(database, states=("growing",))) == {str(scene.growing.id)}
    assert set(trees(database, states=("growing", "ready_for_export"))) == {
        str(t.id) for t in (scene.growing, scene.done, scene.german)
    }
    assert len(trees(database, states=("all",), synthetic="include")) == 4


def test_language_filter(database: Database, scene: Scene) -> None:
    assert set(trees(database, langs=("de",))) == {str(scene.german.id)}
    assert set(trees(database, langs=("de", "en"), states=("all",))) == {
        str(t.id) for t in (scene.growing, scene.done, scene.german)
    }


def test_deleted_filter(database: Database, scene: Scene) -> None:
    assert str(scene.deleted.id) in trees(database, deleted="include")[str(scene.done.id)]
    only = rows(database, deleted="only")
    assert [r.message_id for r in only] == [str(scene.deleted.id)]
    assert only[0].message_tree_id == str(scene.done.id) and only[0].tree_state == "ready_for_export"


def test_spam_filter(database: Database, scene: Scene) -> None:
    with_spam = trees(database, spam="include")[str(scene.done.id)]
    assert ids(scene.spam, scene.pending) <= with_spam
    only = rows(database, spam="only")
    assert [(r.message_id, r.review_result) for r in only] == [(str(scene.spam.id), False)]


def test_synthetic_filter(database: Database, scene: Scene) -> None:
    assert str(scene.synthetic.id) not in trees(database)
    assert str(scene.synthetic.id) in trees(database, synthetic="include")
    assert [r.message_id for r in rows(database, synthetic="only")] == [str(scene.synthetic.messages[1].id)]


def test_user_mode_is_flat_and_covers_every_state(database: Database, scene: Scene) -> None:
    mine = rows(database, user_id=scene.alice.id, synthetic="include")
    assert {r.user_id for r in mine} == {str(scene.alice.id)}
    assert {r.message_tree_id for r in mine} == {
        str(t.id) for t in (scene.done, scene.growing, scene.synthetic)
    }
    assert find_user_id(database, str(scene.alice.id)) == scene.alice.id
    assert find_user_id(database, "nobody") is None


def test_date_range(database: Database, scene: Scene) -> None:
    march = START + timedelta(days=40)
    assert set(trees(database, from_date=march)) == {str(scene.german.id)}
    assert set(trees(database, to_date=march)) == {str(scene.done.id)}
    early = rows(database, user_id=scene.bob.id, to_date=START + timedelta(seconds=2))
    assert [r.message_id for r in early] == [str(scene.done.at(0).id)]  # bob wrote messages 1, 3, 5


def test_prompts_only_and_limit(database: Database, scene: Scene) -> None:
    prompts = list(iter_export(database, ExportOptions(prompts_only=True)))
    assert {t.prompt.message_id for t in prompts} == {str(scene.done.id), str(scene.german.id)}  # type: ignore[union-attr]
    assert all(t.prompt.replies == [] for t in prompts)  # type: ignore[union-attr]
    assert len(trees(database, limit=1)) == 1
    assert len(rows(database, user_id=scene.bob.id, limit=2)) == 2


def test_replies_by_rank_then_date_and_fields(database: Database, scene: Scene) -> None:
    done = scene.done
    database.write(
        lambda s: s.execute(update(Message).where(Message.id == done.at(1).id).values(rank=0, deleted=False))
    )
    tree = one_tree(database, done, deleted="include", spam="include")
    assert tree.prompt is not None
    assert tree.origin == "seed.jsonl" and tree.tree_state == "ready_for_export"
    assert [r.message_id for r in tree.prompt.replies or []] == [str(done.at(1).id), str(done.at(0).id)]
    grandchildren = tree.prompt.replies[1].replies or []  # type: ignore[index]
    assert [r.message_id for r in grandchildren] == [str(done.at(0, 0).id), str(done.at(0, 1).id)]
    root = tree.prompt
    assert (root.role, root.lang, root.review_result, root.deleted, root.synthetic) == (
        "prompter",
        "en",
        True,
        False,
        False,
    )
    assert root.user_id == str(scene.alice.id) and root.created_date == START
    assert root.labels is None and root.events is None and root.message_tree_id is None


def test_labels_average_every_kind_of_label(database: Database, scene: Scene) -> None:
    target = scene.done.at(0)

    def add_labels(session: Any) -> None:
        client_id = target.api_client_id
        for user, labels, task, report in (  # one task review per user and message
            (scene.bob, {"spam": 0.0, "quality": 0.5}, uuid.uuid4(), False),
            (scene.alice, {"spam": 1.0, "quality": 1.0}, uuid.uuid4(), False),
            (scene.bob, {"quality": 0.25, "pii": 1.0}, None, False),
            (scene.bob, {"spam": 1.0}, None, True),
        ):
            session.add(
                TextLabels(
                    user_id=user.id,
                    api_client_id=client_id,
                    message_id=target.id,
                    labels=labels,
                    task_id=task,
                    is_report=report,
                )
            )

    database.write(add_labels)
    exported = {m.message_id: m for m in iter_messages(one_tree(database, scene.done, labels=True))}
    labels = {k: (v.value, v.count) for k, v in (exported[str(target.id)].labels or {}).items()}
    assert labels == {
        "spam": (pytest.approx(2 / 3), 3),
        "quality": (pytest.approx(1.75 / 3), 3),
        "pii": (1.0, 1),
    }
    assert exported[str(scene.done.id)].labels == {}


def test_events(database: Database, scene: Scene) -> None:
    done = scene.done

    def add_events(session: Any) -> None:
        session.add(
            MessageEmoji(message_id=done.root.id, user_id=scene.bob.id, emoji="+1", created_date=START)
        )
        session.add(
            MessageEmoji(
                message_id=done.root.id,
                user_id=scene.alice.id,
                emoji="_skip_reply",
                created_date=START + timedelta(1),
            )
        )
        ranked = [str(done.at(0).id), str(done.at(1).id)]
        payload = {
            "type": "message_ranking",
            "ranking": [1, 0],
            "ranked_message_ids": ranked,
            "ranking_parent_id": str(done.id),
            "message_tree_id": str(done.id),
            "not_rankable": False,
        }
        session.add(
            MessageReaction(
                task_id=uuid.uuid4(),
                user_id=scene.bob.id,
                payload_type="RankingReactionPayload",
                payload=payload,
                api_client_id=done.root.api_client_id,
                message_id=done.id,
            )
        )
        session.add(
            MessageReaction(
                task_id=uuid.uuid4(),
                user_id=scene.alice.id,
                payload_type="RatingReactionPayload",
                payload={"rating": 1},
                api_client_id=done.root.api_client_id,
                message_id=done.id,
            )
        )

    database.write(add_events)
    tree = one_tree(database, done, events=True)
    assert tree.prompt is not None
    events = tree.prompt.model_dump(mode="json")["events"]
    assert events["emoji"] == [
        {"type": "emoji", "user_id": str(scene.bob.id), "emoji": "+1"},
        {"type": "emoji", "user_id": str(scene.alice.id), "emoji": "_skip_reply"},
    ]
    assert events["ranking"] == [
        {
            "type": "ranking",
            "user_id": str(scene.bob.id),
            "ranking": [1, 0],
            "ranked_message_ids": [str(done.at(0).id), str(done.at(1).id)],
            "ranking_parent_id": str(done.id),
            "message_tree_id": str(done.id),
            "not_rankable": False,
        }
    ]
    assert set(events) == {"emoji", "ranking"}  # ratings are not exported (as in the original)
    assert all(m.events is None for m in iter_messages(tree) if m is not tree.prompt)


def test_anonymised_export_is_consistent(database: Database, scene: Scene) -> None:
    def export(seed: int | None) -> list[ExportMessageTree]:
        options = ExportOptions(deleted="include", spam="include", anonymizer_seed=seed)
        return list(iter_export(database, options))  # type: ignore[arg-type]

    plain, first, again, other = export(None), export(42), export(42), export(43)
    assert [t.model_dump() for t in first] == [t.model_dump() for t in again]
    real = {m.message_id for t in plain for m in iter_messages(t)} | {
        m.user_id for t in plain for m in iter_messages(t)
    }
    for tree in first:
        messages = list(iter_messages(tree))
        known = {m.message_id for m in messages}
        assert all(m.parent_id in known for m in messages if m.parent_id is not None)
        assert tree.message_tree_id not in known and len(tree.message_tree_id) == 64
        assert not real & ({m.message_id for m in messages} | {m.user_id for m in messages})
    users = [{m.user_id for m in iter_messages(t)} for t in first]
    assert len(set().union(*users)) == 2 and set.intersection(*users)  # bob: one hash in both trees
    assert {t.message_tree_id for t in first}.isdisjoint({t.message_tree_id for t in other})


def test_gzip_and_flat_files(database: Database, scene: Scene, tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl.gz"
    summary = export_to(database, path, ExportOptions(labels=True, events=True))
    assert (summary.trees, summary.messages) == (2, 7)
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 2
    assert [t.message_tree_id for t in read_message_trees(path)] == sorted(
        [str(scene.done.id), str(scene.german.id)]
    )
    flat = tmp_path / "deleted.jsonl"
    export_to(database, flat, ExportOptions(deleted="only"))
    assert [m.message_id for m in read_messages(flat)] == [str(scene.deleted.id)]
    assert json.loads(flat.read_text())["tree_state"] == "ready_for_export"


# ---------------------------------------------------------------------------------------------------
# streaming


def fill(url: str, messages: int, seed: int = 7) -> None:
    """``messages`` messages in trees of 10 with 3 label rows each and an emoji, inserted with Core."""
    rng = random.Random(seed)
    engine = create_engine(url)
    upgrade(engine)
    client, user = uuid.uuid4(), uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            insert(TABLES["api_client"]).values(
                id=client,
                api_key_hash=client.hex,
                description="t",
                enabled=True,
                trusted=False,
                created_date=START,
            )
        )
        conn.execute(
            insert(TABLES["user"]).values(
                id=user,
                username="u",
                auth_method="local",
                display_name="u",
                api_client_id=client,
                enabled=True,
                deleted=False,
                notes="",
                show_on_leaderboard=True,
                created_date=START,
            )
        )
        for start in range(0, messages, 1000):
            batch: dict[str, list[dict[str, Any]]] = {"m": [], "s": [], "l": [], "e": []}
            for i in range(start, min(start + 1000, messages)):
                mid = uuid.uuid4()
                if i % 10 == 0:
                    root, parent = mid, None
                    batch["s"].append(
                        {
                            "message_tree_id": mid,
                            "goal_tree_size": 10,
                            "max_depth": 3,
                            "max_children_count": 3,
                            "state": "ready_for_export",
                            "active": False,
                            "lang": "en",
                            "created_date": START,
                        }
                    )
                batch["m"].append(
                    {
                        "id": mid,
                        "parent_id": parent,
                        "message_tree_id": root,
                        "user_id": user,
                        "role": "assistant" if parent else "prompter",
                        "api_client_id": client,
                        "frontend_message_id": mid.hex,
                        "created_date": START + timedelta(seconds=i),
                        "text": "word " * rng.randint(20, 200),
                        "lang": "en",
                        "review_result": True,
                    }
                )
                batch["l"] += [
                    {
                        "id": uuid.uuid4(),
                        "api_client_id": client,
                        "message_id": mid,
                        "created_date": START,
                        "labels": {k: rng.random() for k in ("spam", "quality", "humor", "toxicity")},
                    }
                    for _ in range(3)
                ]
                batch["e"].append({"message_id": mid, "user_id": user, "emoji": "+1", "created_date": START})
                parent = root
            conn.execute(insert(TABLES["message"]), batch["m"])
            conn.execute(insert(TABLES["message_tree_state"]), batch["s"])
            conn.execute(insert(TABLES["text_labels"]), batch["l"])
            conn.execute(insert(TABLES["message_emoji"]), batch["e"])
    engine.dispose()


def export_peak(url: str) -> tuple[int, int]:
    database = Database(make_engine(Settings(database_url=url)))
    tracemalloc.start()
    try:
        summary = export_to(database, "/dev/null", ExportOptions(labels=True, events=True))
        return summary.messages, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        database.dispose()


@pytest.mark.slow
def test_export_memory_does_not_grow_with_the_database(tmp_path: Path) -> None:
    peaks = {}
    for n in (10_000, 50_000):
        url = f"sqlite:///{tmp_path / f'{n}.db'}"
        fill(url, n)
        exported, peaks[n] = export_peak(url)
        assert exported == n
    # the batch being built and READ_AHEAD read ahead (200 trees each) at most, whatever the size
    assert peaks[50_000] < 32 * 2**20, peaks
    assert peaks[50_000] < peaks[10_000] * 1.3, peaks
