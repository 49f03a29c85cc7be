"""``BackendClient`` against the real backend app, in process through ``httpx.ASGITransport``,
and its error mapping against scripted transports."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from oasst.client import ApiErrorCode, BackendClient, OasstApiError, OasstConnectionError
from oasst.protocol.common import TextLabel
from oasst.protocol.stats import LeaderboardStats
from oasst.protocol.tasks import (
    InitialPromptTask,
    LabelInitialPromptTask,
    TaskDone,
    TextLabels,
    TextReplyToMessage,
)
from tests.client.conftest import BASE, accept_tos, run, volunteer
from tests.conftest import ROOT_TOKEN, Keys


def test_task_protocol_round_trip(connect: Callable[..., BackendClient]) -> None:
    alice, bob = volunteer("alice"), volunteer("bob")

    async def scenario() -> None:
        async with connect() as client:
            for user in (alice, bob):
                await accept_tos(client, user)
            counts = await client.availability(alice, "en")
            assert counts["initial_prompt"] >= 1

            task = await client.request_task(alice, "initial_prompt", "en")
            assert isinstance(task, InitialPromptTask)
            await client.ack_task(task.id, "fe-alice-1")
            reply = TextReplyToMessage(
                user=alice,
                message_id="fe-alice-1",
                user_message_id="fe-alice-1-msg",
                text="Why is the sky blue?",
            )
            done = await client.post_interaction(reply)
            assert isinstance(done, TaskDone)

            message = await client.get_frontend_message("fe-alice-1-msg")
            assert message.text == "Why is the sky blue?"
            assert message.id is not None
            assert (await client.get_message(message.id)).frontend_message_id == "fe-alice-1-msg"
            tree = await client.get_tree(message.id)
            assert [m.id for m in tree.messages] == [message.id]
            state = await client.get_tree_state(message.id)
            assert state.message_tree_id == message.id
            assert state.state == "initial_prompt_review"

            # bob reviews alice's prompt: a label task, completed with labels
            label_task = await client.request_task(bob, "label_initial_prompt", "en")
            assert isinstance(label_task, LabelInitialPromptTask)
            assert label_task.message_id == message.id
            await client.ack_task(label_task.id, "fe-bob-1")
            labels = TextLabels(
                user=bob,
                message_id=message.id,
                task_id=label_task.id,
                labels={TextLabel.spam: 0.0, TextLabel.quality: 0.8},
            )
            assert isinstance(await client.post_interaction(labels), TaskDone)

            counts = await client.tree_state_counts()
            assert sum(counts.values()) == 1

    run(scenario())


def test_nack_skips_a_task(connect: Callable[..., BackendClient]) -> None:
    carol = volunteer("carol")

    async def scenario() -> None:
        async with connect() as client:
            await accept_tos(client, carol)
            task = await client.request_task(carol, "initial_prompt")
            await client.nack_task(task.id, "not now")
            await client.nack_task((await client.request_task(carol, "initial_prompt")).id)

    run(scenario())


def test_bad_api_key_is_error_2(connect: Callable[..., BackendClient]) -> None:
    async def scenario() -> OasstApiError:
        async with connect("not-a-key") as client:
            with pytest.raises(OasstApiError) as caught:
                await client.request_task(volunteer("dave"))
            return caught.value

    error = run(scenario())
    assert (error.status, error.error_code) == (403, ApiErrorCode.API_CLIENT_NOT_AUTHORIZED)
    assert "API key" in error.message


def test_domain_errors_carry_code_and_message(connect: Callable[..., BackendClient], keys: Keys) -> None:
    erin = volunteer("erin")

    async def scenario() -> list[OasstApiError]:
        errors = []
        async with connect() as client, connect(keys.untrusted) as untrusted:
            await accept_tos(client, erin)
            for call in (
                client.ack_task(uuid.uuid4(), "fe-x"),  # no such task
                client.request_task(volunteer("frank")),  # ToS not accepted
                untrusted.tree_state_counts(),  # trusted only
                client.get_message(uuid.uuid4()),
            ):
                with pytest.raises(OasstApiError) as caught:
                    await call
                errors.append(caught.value)
        return errors

    no_task, no_tos, untrusted, no_message = run(scenario())
    assert (no_task.status, no_task.error_code) == (404, 2100)
    assert (no_tos.status, no_tos.error_code) == (451, ApiErrorCode.USER_HAS_NOT_ACCEPTED_TOS)
    assert (untrusted.status, untrusted.error_code) == (403, ApiErrorCode.API_CLIENT_NOT_AUTHORIZED)
    assert no_message.status == 404 and no_message.error_code == 2001
    assert "2100" in str(no_task) and no_task.message in str(no_task)


def test_leaderboard_and_health(connect: Callable[..., BackendClient]) -> None:
    async def scenario() -> tuple[LeaderboardStats, dict[str, Any]]:
        async with connect() as client:
            return await client.leaderboard("week", max_count=5), await client.health()

    board, health = run(scenario())
    assert board.time_frame == "week"
    assert health["status"] == "ok"


def test_create_api_client_with_root_token(connect: Callable[..., BackendClient]) -> None:
    async def scenario() -> tuple[str, OasstApiError]:
        async with connect(None) as admin:
            key = await admin.create_api_client(
                ROOT_TOKEN, "test bot", trusted=False, frontend_type="discord"
            )
            with pytest.raises(OasstApiError) as caught:
                await admin.create_api_client("wrong-token", "nope")
        async with connect(key) as bot:
            await accept_tos(bot, volunteer("gina"))
            assert isinstance(await bot.request_task(volunteer("gina"), "initial_prompt"), InitialPromptTask)
        return key, caught.value

    key, refused = run(scenario())
    assert len(key) >= 32
    assert (refused.status, refused.error_code) == (403, ApiErrorCode.ROOT_TOKEN_NOT_AUTHORIZED)


# -- without a backend: transports that script the answers ----------------------------------------


def scripted(handler: Callable[[httpx.Request], httpx.Response]) -> BackendClient:
    return BackendClient(BASE + "/api/v1/", "k", transport=httpx.MockTransport(handler))


def test_requests_carry_key_paths_and_bodies() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/v1/tasks/availability":
            return httpx.Response(200, json={"initial_prompt": 2, "random": 2})
        return httpx.Response(204)

    async def scenario() -> dict[str, int]:
        async with scripted(handler) as client:
            await client.ack_task("t1", "fe-1")
            await client.nack_task("t1", "skip")
            return await client.availability(volunteer("hal"), "de")

    counts = run(scenario())
    assert counts == {"initial_prompt": 2, "random": 2}
    ack, nack, availability = seen
    assert str(ack.url) == f"{BASE}/api/v1/tasks/t1/ack"
    assert ack.headers["X-API-Key"] == "k"
    assert json.loads(ack.content) == {"message_id": "fe-1"}
    assert json.loads(nack.content) == {"reason": "skip"}
    assert availability.url.params["lang"] == "de"
    assert json.loads(availability.content) == {"id": "hal", "display_name": "Hal", "auth_method": "local"}


def test_query_values_and_path_segments_are_spelled_for_the_wire() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    since = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    client_id = uuid.uuid4()

    async def scenario() -> None:
        async with scripted(handler) as client:
            await client.list_messages(start_date=since, api_client_id=client_id, include_deleted=True)
            await client.frontend_user_messages("discord", "ann#0001 ?x", max_count=5)
            await client.list_users("display_name", gte="b", lte="d")

    run(scenario())
    listing, by_user, users = seen
    assert dict(listing.url.params) == {
        "api_client_id": str(client_id),
        "only_roots": "false",
        "allow_deleted": "true",
        "start_date": "2024-05-01T12:30:00+00:00",
        "desc": "true",
    }
    assert by_user.url.raw_path.startswith(b"/api/v1/frontend_users/discord/ann%230001%20%3Fx/messages?")
    assert by_user.url.params["max_count"] == "5" and "lang" not in by_user.url.params
    assert users.url.path == "/api/v1/users/by_display_name"
    assert (users.url.params["gte_display_name"], users.url.params["lte_display_name"]) == ("b", "d")


@pytest.mark.parametrize(
    ("response", "status", "code", "text"),
    [
        (httpx.Response(400, json={"message": "Too long", "error_code": 1008}), 400, 1008, "Too long"),
        (httpx.Response(404, json={"detail": "Not Found"}), 404, ApiErrorCode.NOT_FOUND, "Not Found"),
        (
            httpx.Response(502, text="<html>bad gateway</html>"),
            502,
            ApiErrorCode.GENERIC_ERROR,
            "bad gateway",
        ),
        (httpx.Response(200, json={"type": "no_such_task"}), 200, ApiErrorCode.GENERIC_ERROR, "Unexpected"),
    ],
)
def test_error_answers_become_oasst_api_errors(
    response: httpx.Response, status: int, code: int, text: str
) -> None:
    async def scenario() -> None:
        async with scripted(lambda _: response) as client:
            await client.request_task(volunteer("ian"))

    with pytest.raises(OasstApiError) as caught:
        run(scenario())
    assert (caught.value.status, caught.value.error_code) == (status, code)
    assert text in caught.value.message


def test_unreachable_backend_is_a_connection_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def scenario() -> None:
        async with scripted(refuse) as client:
            await client.health()

    with pytest.raises(OasstConnectionError) as caught:
        run(scenario())
    assert isinstance(caught.value, OasstApiError)
    assert caught.value.status == 0
    assert "Could not reach http://backend.test" in str(caught.value)


def test_an_injected_http_client_is_left_open() -> None:
    async def scenario() -> bool:
        transport = httpx.MockTransport(lambda _: httpx.Response(200, json={"status": "ok"}))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            async with BackendClient(api_key="k", http=http) as client:
                assert (await client.health())["status"] == "ok"
            return http.is_closed

    assert run(scenario()) is False
