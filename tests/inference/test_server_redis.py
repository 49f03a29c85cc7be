"""Production mode against real Redis: the atomic queue cap, requeue to the front, replayable event logs,
and several server processes sharing the work (a worker on one, clients on another, a dead process's
work recovered by another's sweeper)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from oasst.inference.protocol import ChatTurn, MessageState, Role, SamplingParameters, WorkRequest
from oasst.inference.server.db import Database
from oasst.inference.server.events import RedisEventLog
from oasst.inference.server.models import Message
from oasst.inference.server.queue import RedisPrepared, RedisQueue
from oasst.inference.server.settings import Settings
from tests.inference.conftest import ChatSession, Keys, ScriptedWorker, sse_events, wait_for, workers

pytestmark = pytest.mark.redis

ServerFactory = Callable[[Settings], AbstractContextManager[str]]


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = f"oasst-test:{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{value}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def redis_settings(settings: Settings, redis_url: str, prefix: str) -> Settings:
    return settings.model_copy(update={"redis_url": redis_url, "redis_key_prefix": prefix})


@pytest.mark.anyio
async def test_prepared_requests_are_taken_once_and_expire(aredis: aioredis.Redis, prefix: str) -> None:
    store = RedisPrepared(aredis, prefix)
    turns = [ChatTurn(role=Role.user, content="Hi")]
    requests = [WorkRequest(id=i, model="m", messages=turns, sampling=SamplingParameters()) for i in "abc"]
    await store.put(requests, ttl_s=1)
    # any process may take one (another server process pops the id), but only once
    assert await RedisPrepared(aredis, prefix).take("a") == requests[0]
    assert await store.take("a") is None
    await store.drop(["b"])  # the message ended while queued
    assert await store.take("b") is None
    await asyncio.sleep(1.2)
    assert await store.take("c") is None  # expired: the session reads it from the database instead


@pytest.mark.anyio
async def test_queue_cap_is_atomic_and_requeue_goes_first(aredis: aioredis.Redis, prefix: str) -> None:
    queue = RedisQueue(aredis, prefix)
    results = await asyncio.gather(*(queue.push("m", [f"id{i}a", f"id{i}b"], max_size=9) for i in range(20)))
    assert sum(results) == 4  # 4 requests of 2 fit under 9; none partially
    assert (await queue.position("m", "nothing"))[1] == 8
    admitted = [i for i, ok in enumerate(results) if ok]
    first = await aredis.lindex(f"{prefix}q:m", 0)
    assert first in {f"id{i}a" for i in admitted}
    assert await queue.position("m", first) == (1, 8)

    popped = await queue.pop("m", "session-1", 1.0)
    assert popped == first
    await queue.push_front("m", "urgent")
    assert await queue.position("m", "urgent") == (1, 8)
    # the holder died before starting it: release puts it back at the front, nothing lost
    await queue.release("session-1", "m")
    assert await queue.position("m", first) == (1, 9)
    assert await queue.pop("m", "session-2", 1.0) == first
    await queue.ack("session-2", first)
    await queue.release("session-2", "m")
    assert await queue.position("m", first) == (None, 8)
    await queue.remove("m", "urgent")
    assert await queue.position("m", "urgent") == (None, 7)
    assert await RedisQueue(aredis, prefix).pop("empty", "s", 0.05) is None


@pytest.mark.anyio
async def test_event_logs_replay_for_every_reader(aredis: aioredis.Redis, prefix: str) -> None:
    log = RedisEventLog(aredis, prefix, ttl_s=60)
    await log.publish("m1", {"event_type": "token", "text": "a"})

    async def reader() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        cursor = ""
        while not seen or seen[-1]["event_type"] != "message":
            events, cursor = await log.read("m1", cursor, 1.0)
            seen.extend(events)
        return seen

    readers = [asyncio.create_task(reader()) for _ in range(2)]
    await asyncio.sleep(0.05)
    await log.publish("m1", {"event_type": "token", "text": "b"})
    await log.publish("m1", {"event_type": "message", "message": {}})
    for seen in await asyncio.gather(*readers):
        assert [e.get("text") for e in seen] == ["a", "b", None]
    assert 0 < await aredis.ttl(f"{prefix}ev:m1") <= 60


def test_two_server_processes_share_queue_events_and_stop(
    redis_settings: Settings,
    server_factory: ServerFactory,
    keys: Keys,
    chat_factory: Callable[..., ChatSession],
) -> None:
    with (
        server_factory(redis_settings) as a,
        server_factory(redis_settings) as b,
        workers(ScriptedWorker(a, keys.worker, hold_after=2)) as (worker,),
    ):
        chat = chat_factory(b)  # the user talks to B; the worker is connected to A
        chat_id = chat.new_chat()
        root = chat.say(chat_id, "Hi")
        [reply] = chat.ask(chat_id, root)
        seen = []
        with chat.http.stream("GET", f"/chats/{chat_id}/messages/{reply['id']}/events") as r:
            for e in sse_events(r):
                seen.append(e)
                if sum(x["event_type"] == "token" for x in seen) == 2:
                    break
        assert [e["text"] for e in seen if e["event_type"] == "token"] == ["Hello", ","]
        # stop on B reaches the worker's connection on A through the cancel broadcast
        stopped = chat.http.post(f"/chats/{chat_id}/messages/{reply['id']}/stop").json()
        assert stopped["state"] == "cancelled" and stopped["content"] == "Hello,"
        wait_for(lambda: worker.cancels == [reply["id"]], what="CancelWork on A")
        worker.release()
        # both processes see the worker; the next request asked on A is served
        models = chat_factory(a).http.get("/models").json()
        assert models[0]["workers"] == 1
        [again] = chat.ask(chat_id, root)
        assert chat.wait_state(chat_id, again["id"], "complete")["content"] == "Hello, world!"
        assert [e["event_type"] for e in chat_factory(a).events(chat_id, again["id"])][-1] == "message"


def test_work_of_a_dead_server_process_is_recovered(
    redis_settings: Settings,
    server_factory: ServerFactory,
    keys: Keys,
    chat_factory: Callable[..., ChatSession],
    inf_db: Database,
    redis_url: str,
    prefix: str,
) -> None:
    with server_factory(redis_settings) as url:
        chat = chat_factory(url)
        chat_id = chat.new_chat()
        root = chat.say(chat_id, "Hi")
        [started, popped] = chat.ask(chat_id, root, drafts=2)
        # a process that has since died held session "ghost": it had started one message and popped another
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        assert r.lrem(f"{prefix}q:test-model", 0, started["id"]) == 1
        assert r.lrem(f"{prefix}q:test-model", 0, popped["id"]) == 1
        r.rpush(f"{prefix}proc:ghost", popped["id"])
        r.hset(f"{prefix}session_info", "ghost", json.dumps({"model": "test-model"}))
        r.zadd(f"{prefix}sessions", {"ghost": time.time() - 60})
        r.close()

        def mark_started(s: Any) -> None:
            row = s.get(Message, started["id"])
            row.state, row.worker_session = MessageState.in_progress.value, "ghost"

        inf_db.write(mark_started)
        with workers(ScriptedWorker(url, keys.worker, max_parallel=2)):
            for m in (started, popped):
                assert chat.wait_state(chat_id, m["id"], "complete")["content"] == "Hello, world!"


def test_the_reply_limit_is_shared_by_every_server_process(
    redis_settings: Settings, inf_db: Database
) -> None:
    from fastapi.testclient import TestClient

    from oasst.inference.server.app import create_app
    from oasst.inference.server.errors import ErrorCode
    from tests.inference.conftest import user_headers

    limited = redis_settings.model_copy(update={"reply_limit": 2})
    alice = user_headers("alice")
    with (
        TestClient(create_app(limited, database=inf_db, migrate=False)) as one,
        TestClient(create_app(limited, database=inf_db, migrate=False)) as two,
    ):
        chat = one.post("/chats", json={}, headers=alice).json()["id"]
        root = one.post(f"/chats/{chat}/messages", json={"content": "Hi"}, headers=alice).json()["id"]
        ask = {"parent_id": root}
        assert one.post(f"/chats/{chat}/assistant-messages", json=ask, headers=alice).status_code == 202
        assert two.post(f"/chats/{chat}/assistant-messages", json=ask, headers=alice).status_code == 202
        refused = one.post(f"/chats/{chat}/assistant-messages", json=ask, headers=alice)
        assert refused.status_code == 429 and refused.json()["error_code"] == ErrorCode.TOO_MANY_REPLIES
