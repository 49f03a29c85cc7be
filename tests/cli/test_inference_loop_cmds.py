"""``oasst inference export`` against a real inference database filled through the server's services, and
``oasst inference synthesize`` against a live backend with a real OpenAI-compatible server or a tiny
locally bootstrapped model."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from oasst.backend.app import create_app
from oasst.backend.db import Database as BackendDatabase
from oasst.backend.models import Message, TreeState
from oasst.cli.main import app
from oasst.data import iter_messages, read_message_trees
from oasst.inference.protocol import CreateChat, CreateReport, FinishReason, SamplingParameters, Usage
from oasst.inference.server.db import Database
from oasst.inference.server.db import make_engine as make_inference_engine
from oasst.inference.server.migrate import upgrade
from oasst.inference.server.models import Chat, InfBase
from oasst.inference.server.models import Message as ChatMessage
from oasst.inference.server.services import chats as chat_service
from oasst.inference.server.services import work
from oasst.training.datasets_io import read_records
from tests.backend.factories import client_for_key, make_db_user, make_tree
from tests.backend.live_server import serve
from tests.conftest import Keys, make_test_settings
from tests.inference.conftest import make_settings

runner = CliRunner()

# ---------------------------------------------------------------------------------------------- export


@pytest.fixture
def chat_db(database_url: str) -> Iterator[Database]:
    db = Database(make_inference_engine(make_settings(database_url)))
    upgrade(db.engine)
    _empty(db)
    yield db
    _empty(db)
    db.dispose()


def _empty(db: Database) -> None:
    with db.engine.begin() as conn:
        for table in reversed(InfBase.metadata.sorted_tables):
            conn.execute(table.delete())


class Chats:
    """Writes chats as the server does: user messages, then assistant replies that a worker finishes."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def chat(self, owner: str, *, allow: bool = True) -> Chat:
        body = CreateChat(allow_data_use=allow, system_prompt="Be kind.")
        return chat_service.create_chat(self.session, user_id=owner, display_name=owner.title(), body=body)

    def say(self, chat: Chat, text: str, parent: ChatMessage | None = None) -> ChatMessage:
        return chat_service.add_user_message(
            self.session,
            chat,
            parent_id=parent.id if parent else None,
            content=text,
            max_messages=100,
            max_length=1000,
        )

    def answer(self, chat: Chat, parent: ChatMessage, *texts: str, finish: bool = True) -> list[ChatMessage]:
        replies = chat_service.add_assistant_messages(
            self.session,
            chat,
            parent_id=parent.id,
            model="tiny-sft",
            sampling=SamplingParameters(),
            drafts=len(texts),
            max_messages=100,
        )
        done = []
        for reply, text in zip(replies, texts, strict=True):
            assert work.start_work(self.session, reply.id, session_id="w1", worker_key_id="k1", deadline_s=60)
            if finish:
                finished = work.complete_work(
                    self.session,
                    reply.id,
                    session_id="w1",
                    text=text,
                    finish_reason=FinishReason.stop,
                    usage=Usage(prompt_tokens=3, completion_tokens=2),
                )
                assert finished is not None
                done.append(finished)
        return done


def fill(session: Session) -> None:
    c = Chats(session)
    alice = c.chat("alice")
    q = c.say(alice, "Name a colour.")
    _red, blue = c.answer(alice, q, "Red.", "Blue.")
    chat_service.pick_draft(session, alice, blue.id)
    q2 = c.say(alice, "Another?", blue)
    good, bad = c.answer(alice, q2, "Green.", "Potato.")
    chat_service.vote(session, alice, good.id, 1)
    chat_service.vote(session, alice, bad.id, -1)
    chat_service.report(
        session, alice, bad.id, "alice", CreateReport(report_type="feedback", reason="not a colour")
    )

    plain = c.chat("carol")
    c.answer(plain, c.say(plain, "Hello"), "Hi!")  # a tree, no preferences

    bob = c.chat("bob", allow=False)  # opted out: never read
    bq = c.say(bob, "bob's secret question")
    bgood, bbad = c.answer(bob, bq, "bob's good answer", "bob's bad answer")
    chat_service.pick_draft(session, bob, bgood.id)
    chat_service.vote(session, bob, bbad.id, -1)

    dave = c.chat("dave")
    c.answer(dave, c.say(dave, "dave waits"), "never finished", finish=False)  # no complete reply: no tree


def export(url: str, out: Path, *args: str) -> Any:
    result = runner.invoke(app, ["inference", "export", "--database-url", url, "--out-dir", str(out), *args])
    assert result.exit_code == 0, result.output
    return result


def test_export_writes_trees_and_preferences(chat_db: Database, database_url: str, tmp_path: Path) -> None:
    chat_db.write(fill)
    result = export(database_url, tmp_path, "--lang", "en")
    assert "Read 2 opted-in chats." in result.output  # dave's chat has no finished reply
    assert "2 trees, 8 messages" in result.output
    assert "2 pairs (1 from draft picks, 1 from votes)" in result.output

    files = {p.name for p in tmp_path.iterdir()}
    assert files == {"chats.trees.jsonl", "preferences.dpo.jsonl", "preferences.rm.jsonl"}
    for path in tmp_path.iterdir():
        assert "bob" not in path.read_text()  # the opted-out chat appears nowhere

    trees = list(read_message_trees(tmp_path / "chats.trees.jsonl"))
    texts = sorted(sorted(n.text for n in iter_messages(t)) for t in trees)
    assert texts == [["Another?", "Blue.", "Green.", "Name a colour.", "Potato.", "Red."], ["Hello", "Hi!"]]
    nodes = {n.text: n for t in trees for n in iter_messages(t)}
    assert nodes["Blue."].synthetic is True and nodes["Blue."].model_name == "tiny-sft"
    assert nodes["Name a colour."].user_id == "alice" and nodes["Name a colour."].lang == "en"
    assert nodes["Green."].emojis == {"+1": 1} and nodes["Potato."].emojis == {"-1": 1}
    assert nodes["Potato."].events is not None and "report" in nodes["Potato."].events
    assert nodes["Name a colour."].events is not None and "draft_pick" in nodes["Name a colour."].events

    dpo = list(read_records(tmp_path / "preferences.dpo.jsonl", kind="dpo"))
    got = {(r["chosen"][0]["content"], r["rejected"][0]["content"], r["source"]) for r in dpo}
    assert got == {("Blue.", "Red.", "draft_pick"), ("Green.", "Potato.", "vote")}
    second = next(r for r in dpo if r["source"] == "vote")
    assert [t["content"] for t in second["prompt"]] == ["Name a colour.", "Blue.", "Another?"]
    assert {r["tree_id"] for r in dpo} == {nodes["Name a colour."].message_id}
    rm = list(read_records(tmp_path / "preferences.rm.jsonl", kind="rm"))
    assert sorted(r["replies"] for r in rm) == [["Blue.", "Red."], ["Green.", "Potato."]]


def test_export_since_and_options(chat_db: Database, database_url: str, tmp_path: Path) -> None:
    chat_db.write(fill)
    result = export(database_url, tmp_path / "none", "--since", "2999-01-01")
    assert "Read 0 opted-in chats." in result.output
    assert (tmp_path / "none" / "chats.trees.jsonl").read_text() == ""

    export(database_url, tmp_path / "anon", "--anonymizer-seed", "s3cret", "--include-system")
    raw = (tmp_path / "anon" / "chats.trees.jsonl").read_text()
    assert "alice" not in raw and "Name a colour." in raw
    dpo = list(read_records(tmp_path / "anon" / "preferences.dpo.jsonl", kind="dpo"))
    assert all(r["prompt"][0] == {"role": "system", "content": "Be kind."} for r in dpo)


def test_export_errors_are_clear(tmp_path: Path) -> None:
    missing = runner.invoke(
        app,
        [
            "inference",
            "export",
            "--database-url",
            f"sqlite:///{tmp_path}/nope.db",
            "--out-dir",
            str(tmp_path),
        ],
    )
    assert missing.exit_code == 1 and "No inference database" in missing.output
    (tmp_path / "empty.db").write_bytes(b"")
    empty = runner.invoke(
        app,
        [
            "inference",
            "export",
            "--database-url",
            f"sqlite:///{tmp_path}/empty.db",
            "--out-dir",
            str(tmp_path),
        ],
    )
    assert empty.exit_code == 1 and "oasst inference serve" in empty.output


# ------------------------------------------------------------------------------------------ synthesize


class FakeOpenAI:
    """A streaming ``/v1/chat/completions`` that answers ``Reply to: <last user turn>``."""

    def __init__(self, key: str = "up-key") -> None:
        self.key = key
        self.requests: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.get("/v1/models")(self.models)
        self.app.post("/v1/chat/completions")(self.chat)

    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "up-model", "object": "model"}]}

    async def chat(self, request: Request) -> Any:
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        body = await request.json()
        self.requests.append(body)
        text = f"Reply to: {body['messages'][-1]['content']}"

        async def stream() -> AsyncIterator[str]:
            for word in text.split(" "):
                delta = {"choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}
                yield f"data: {json.dumps(delta)}\n\n"
            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")


@pytest.fixture
def backend_url(database_url: str, database: BackendDatabase, keys: Keys) -> Iterator[str]:
    settings = make_test_settings(database_url, rate_limits={"enabled": False})
    with serve(create_app(settings, database=database, migrate=False)) as url:
        yield url


def growing_trees(database: BackendDatabase, keys: Keys) -> list[uuid.UUID]:
    """Two prompter messages that need an assistant reply (a root, and a leaf under an assistant)."""

    def work_(s: Session) -> list[uuid.UUID]:
        client = client_for_key(s, keys.trusted)
        user = make_db_user(s, client)
        first = make_tree(s, client, user, shape=[], texts=["Tell me a joke."], goal_tree_size=10)
        second = make_tree(
            s, client, user, shape=[[[]]], texts=["Q1", "A1", "Q2"], goal_tree_size=10, max_children_count=1
        )
        make_tree(s, client, user, shape=[], texts=["ranking"], state=TreeState.RANKING)
        return [first.id, second.at(0, 0).id]

    return database.write(work_)


def synthetic_replies(database: BackendDatabase) -> list[Message]:
    return database.read(
        lambda s: list(s.scalars(select(Message).where(Message.synthetic.is_(True)).order_by(Message.text)))
    )


def synthesize(url: str, key: str, *args: str) -> Any:
    return runner.invoke(app, ["inference", "synthesize", "--backend-url", url, "--api-key", key, *args])


def test_synthesize_through_an_openai_compatible_server(
    backend_url: str, database: BackendDatabase, keys: Keys
) -> None:
    parents = growing_trees(database, keys)
    upstream = FakeOpenAI()
    with serve(upstream.app) as up_url:
        args = ["--inference-url", up_url, "--inference-key", "up-key", "--max", "5", "--temperature", "0"]
        result = synthesize(backend_url, keys.trusted, *args)
        assert result.exit_code == 0, result.output
        assert "up-model: inserted 2 synthetic replies, skipped 0." in result.output
        replies = synthetic_replies(database)
        assert [r.text for r in replies] == ["Reply to: Q2", "Reply to: Tell me a joke."]
        assert {r.parent_id for r in replies} == set(parents)
        assert all(r.model_name == "up-model" and r.role == "assistant" for r in replies)
        assert all(r.review_result is None and r.user_id is None for r in replies)
        # the model saw the whole conversation
        q2 = next(b for b in upstream.requests if b["messages"][-1]["content"] == "Q2")
        assert [(m["role"], m["content"]) for m in q2["messages"]] == [
            ("user", "Q1"),
            ("assistant", "A1"),
            ("user", "Q2"),
        ]

        again = synthesize(backend_url, keys.trusted, *args)  # each model answers a message once
        assert again.exit_code == 0 and "nothing to do" in again.output
        other = synthesize(backend_url, keys.trusted, *args, "--model-name", "up-model-2")
        # Q2's parent allows one reply and has it now; the root takes a second model's reply
        assert other.exit_code == 0 and "up-model-2: inserted 1 synthetic replies" in other.output
    assert len(synthetic_replies(database)) == 3


def test_synthesize_refusals(backend_url: str, database: BackendDatabase, keys: Keys) -> None:
    growing_trees(database, keys)
    neither = synthesize(backend_url, keys.trusted)
    assert neither.exit_code == 1 and "--model DIR or --inference-url" in neither.output
    upstream = FakeOpenAI()
    with serve(upstream.app) as up_url:
        untrusted = synthesize(
            backend_url, keys.untrusted, "--inference-url", up_url, "--inference-key", "up-key"
        )
        assert untrusted.exit_code == 1 and "trusted" in untrusted.output
        bad_key = synthesize(backend_url, keys.trusted, "--inference-url", up_url, "--model-name", "x")
        assert bad_key.exit_code == 1, bad_key.output
        assert "skipped 2" in bad_key.output and "401" in bad_key.output
        assert "failed on every conversation" in bad_key.output
    down = synthesize(
        "http://127.0.0.1:9", keys.trusted, "--inference-url", "http://127.0.0.1:9", "--model-name", "x"
    )
    assert down.exit_code == 1 and "backend" in down.output.lower()
    assert synthetic_replies(database) == []


@pytest.mark.slow  # builds the tiny model (seconds) and generates on CPU
def test_synthesize_with_a_tiny_local_model(backend_url: str, database: BackendDatabase, keys: Keys) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.inference.test_engines import tiny_model_dir

    growing_trees(database, keys)
    model = tiny_model_dir()
    args = ["--model", str(model), "--model-name", "tiny", "--max-new-tokens", "8", "--temperature", "0"]
    result = synthesize(backend_url, keys.trusted, *args, "--keep-truncated", "--device", "cpu")
    assert result.exit_code == 0, result.output
    replies = synthetic_replies(database)
    inserted = int(result.output.split("inserted ")[1].split()[0])
    assert inserted == len(replies) >= 1
    assert all(r.model_name == "tiny" and r.text for r in replies)
