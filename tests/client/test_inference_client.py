"""``InferenceClient`` against the real inference server app with a scripted websocket worker: chats,
branches, streamed replies, stop, drafts, feedback, export, and the errors a caller sees.

The server runs under uvicorn on the test's own event loop (the worker needs a real websocket); the
client reaches it through ``StreamingASGITransport`` (in-process, as ``oasst up`` does) or over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from oasst.client import (
    InferenceClient,
    InferenceErrorCode,
    OasstApiError,
    OasstConnectionError,
    StreamingASGITransport,
)
from oasst.inference.protocol import (
    CreateChat,
    ErrorStreamEvent,
    MessageRead,
    MessageState,
    MessageStreamEvent,
    PendingStreamEvent,
    StreamEvent,
    TokenStreamEvent,
    UpdateChat,
)
from oasst.inference.server.app import create_app
from oasst.inference.server.db import Database
from oasst.inference.server.services.keys import create_key
from oasst.inference.tokens import mint_user_token
from tests.backend.live_server import free_port
from tests.inference.conftest import MODEL, SECRET, ScriptedWorker, inf_db, make_settings

__all__ = ["inf_db", "serving"]  # inf_db: the inference tables, emptied around each test

ALICE = mint_user_token(SECRET, "local:alice", "Alice", ttl=3600)
BOB = mint_user_token(SECRET, "local:bob", "Bob", ttl=3600)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on the running event loop; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


Scenario = Callable[[InferenceClient, str], Awaitable[None]]


@pytest.fixture
def run_with_server(inf_db: Database) -> Callable[..., None]:
    """Runs ``scenario(client, url)`` with a live server; ``http=True`` reaches it over the network."""
    worker_key = inf_db.write(lambda s: create_key(s, kind="worker", name="test worker")[1])

    def run(scenario: Scenario, *, http: bool = False, **worker_options: Any) -> None:
        app = create_app(
            make_settings(inf_db.engine.url.render_as_string(False)), database=inf_db, migrate=False
        )

        async def main() -> None:
            async with serving(app) as url:
                worker = ScriptedWorker(url, worker_key, **worker_options)
                await asyncio.to_thread(worker.start)
                try:
                    transport = None if http else StreamingASGITransport(app)
                    async with InferenceClient(
                        url if http else "http://inference.test", transport=transport
                    ) as c:
                        await scenario(c, url)
                finally:
                    worker.release()
                    await asyncio.to_thread(worker.stop)

        asyncio.run(main())

    return run


async def _events(client: InferenceClient, chat_id: str, message_id: str) -> list[StreamEvent]:
    return [e async for e in client.stream_events(chat_id, message_id, as_user=ALICE)]


async def _reply(client: InferenceClient, chat_id: str, parent_id: str, **ask: Any) -> MessageRead:
    [reply] = await client.request_assistant_messages(chat_id, parent_id, as_user=ALICE, **ask)
    final = (await _events(client, chat_id, reply.id))[-1]
    assert isinstance(final, MessageStreamEvent), final
    return final.message


def test_chat_tree_stream_feedback_and_export(run_with_server: Callable[..., None]) -> None:
    async def scenario(client: InferenceClient, _: str) -> None:
        for _ in range(500):  # the worker's hello is registered just after it connects
            [model] = [m for m in await client.list_models(as_user=ALICE) if m.name == MODEL]
            if model.workers:
                break
            await asyncio.sleep(0.01)
        assert model.workers == 1 and {p.name for p in model.presets} >= {"greedy", "creative"}

        chat = await client.create_chat(CreateChat(system_prompt="Be brief."), as_user=ALICE)
        assert chat.system_prompt == "Be brief." and chat.allow_data_use
        question = await client.post_user_message(chat.id, "What is a tree?", as_user=ALICE)
        [pending] = await client.request_assistant_messages(
            chat.id, question.id, preset="greedy", as_user=ALICE
        )
        assert pending.state == MessageState.pending and pending.sampling and not pending.sampling.do_sample

        events = await _events(client, chat.id, pending.id)
        assert [e.text for e in events if isinstance(e, TokenStreamEvent)] == ["Hello", ",", " world", "!"]
        assert all(isinstance(e, PendingStreamEvent | TokenStreamEvent) for e in events[:-1])
        final = events[-1]
        assert isinstance(final, MessageStreamEvent)
        assert final.message.state == MessageState.complete and final.message.content == "Hello, world!"

        again = await _reply(client, chat.id, question.id)  # regenerate: a sibling reply
        follow = await client.post_user_message(chat.id, "Name one.", final.message.id, as_user=ALICE)
        edit = await client.post_user_message(chat.id, "Name two.", final.message.id, as_user=ALICE)
        tree = await client.get_chat(chat.id, as_user=ALICE)
        assert tree.title == "What is a tree?"
        assert [m.id for m in tree.messages if m.parent_id == question.id] == [final.message.id, again.id]
        assert [m.id for m in tree.messages if m.parent_id == final.message.id] == [follow.id, edit.id]

        voted = await client.vote(chat.id, again.id, 1, as_user=ALICE)
        assert voted.score == 1
        assert await client.report(chat.id, again.id, "offensive", "rude", as_user=ALICE) > 0
        assert (await client.get_message(chat.id, again.id, as_user=ALICE)).score == 1

        other = await client.create_chat(CreateChat(title="Cooking"), as_user=ALICE)
        assert [c.id for c in (await client.list_chats(as_user=ALICE)).items] == [other.id, chat.id]
        assert [c.id for c in (await client.search_chats("NAME TWO", as_user=ALICE)).items] == [chat.id]
        renamed = await client.update_chat(chat.id, UpdateChat(title="Trees", hidden=True), as_user=ALICE)
        assert renamed.title == "Trees" and renamed.hidden and renamed.system_prompt == "Be brief."
        assert [c.id for c in (await client.list_chats(as_user=ALICE)).items] == [other.id]
        opted_out = await client.update_chat(chat.id, UpdateChat(allow_data_use=False), as_user=ALICE)
        assert not opted_out.allow_data_use and opted_out.title == "Trees"

        markdown = await client.export_chat(chat.id, "md", as_user=ALICE)
        assert markdown.media_type == "text/markdown" and markdown.filename == f"chat-{chat.id}.md"
        assert "# Trees" in markdown.content and "Name two." in markdown.content
        exported = await client.export_chat(chat.id, "json", as_user=ALICE)
        assert exported.media_type == "application/json"
        assert len(json.loads(exported.content)["messages"]) == 5

        await client.delete_chat(chat.id, as_user=ALICE)
        with pytest.raises(OasstApiError) as gone:
            await client.get_chat(chat.id, as_user=ALICE)
        assert gone.value.status == 404 and gone.value.error_code == InferenceErrorCode.CHAT_NOT_FOUND
        await client.hide_all_chats(as_user=ALICE)
        assert (await client.list_chats(as_user=ALICE)).items == []

    run_with_server(scenario)


def test_drafts_and_pick(run_with_server: Callable[..., None]) -> None:
    async def scenario(client: InferenceClient, _: str) -> None:
        chat = await client.create_chat(as_user=ALICE)
        question = await client.post_user_message(chat.id, "Two ways?", as_user=ALICE)
        drafts = await client.request_assistant_messages(chat.id, question.id, drafts=2, as_user=ALICE)
        assert len(drafts) == 2 and drafts[0].draft_group and drafts[0].draft_group == drafts[1].draft_group
        for draft in drafts:
            assert isinstance((await _events(client, chat.id, draft.id))[-1], MessageStreamEvent)
        picked = await client.pick_draft(chat.id, drafts[1].id, as_user=ALICE)
        assert {m.id: m.selected for m in picked} == {drafts[0].id: False, drafts[1].id: True}

    run_with_server(scenario, max_parallel=2)


def test_stop_keeps_the_text_so_far(run_with_server: Callable[..., None]) -> None:
    async def scenario(client: InferenceClient, _: str) -> None:
        chat = await client.create_chat(as_user=ALICE)
        question = await client.post_user_message(chat.id, "Talk.", as_user=ALICE)
        [reply] = await client.request_assistant_messages(chat.id, question.id, as_user=ALICE)
        seen: list[StreamEvent] = []
        async for event in client.stream_events(chat.id, reply.id, as_user=ALICE):
            seen.append(event)
            if isinstance(event, TokenStreamEvent):  # the worker holds after its first token
                stopped = await client.stop_message(chat.id, reply.id, as_user=ALICE)
                assert stopped.state == MessageState.cancelled and stopped.content == "Hello"
        final = seen[-1]
        assert isinstance(final, MessageStreamEvent | ErrorStreamEvent)
        assert (await client.get_message(chat.id, reply.id, as_user=ALICE)).state == MessageState.cancelled

    run_with_server(scenario, hold_after=1)


def test_streams_over_http_and_errors(run_with_server: Callable[..., None]) -> None:
    async def scenario(client: InferenceClient, url: str) -> None:
        chat = await client.create_chat(as_user=ALICE)
        question = await client.post_user_message(chat.id, "Hi", as_user=ALICE)
        reply = await _reply(client, chat.id, question.id)
        assert reply.content == "Hello, world!"

        with pytest.raises(OasstApiError) as other:  # another user: the chat does not exist for them
            await client.get_chat(chat.id, as_user=BOB)
        assert other.value.error_code == InferenceErrorCode.CHAT_NOT_FOUND
        with pytest.raises(OasstApiError) as stream_other:
            await anext(client.stream_events(chat.id, reply.id, as_user=BOB))
        assert stream_other.value.status == 404
        forged = mint_user_token("another-secret", "local:alice", "Alice")
        with pytest.raises(OasstApiError) as bad:
            await client.list_chats(as_user=forged)
        assert bad.value.status == 401 and bad.value.error_code == InferenceErrorCode.TOKEN_INVALID
        with pytest.raises(OasstApiError) as parent:
            await client.post_user_message(chat.id, "again", question.id, as_user=ALICE)
        assert parent.value.error_code == InferenceErrorCode.INVALID_PARENT
        with pytest.raises(OasstApiError) as model:
            await client.request_assistant_messages(chat.id, question.id, model="nope", as_user=ALICE)
        assert model.value.error_code == InferenceErrorCode.MODEL_UNKNOWN

        async with InferenceClient(f"http://127.0.0.1:{free_port()}") as nowhere:
            with pytest.raises(OasstConnectionError):
                await nowhere.list_chats(as_user=ALICE)
            with pytest.raises(OasstConnectionError):
                await anext(nowhere.stream_events("c", "m", as_user=ALICE))

    run_with_server(scenario, http=True)
