"""``BackendClient`` user reads, lists, changes, messages and stats against the real backend app."""

from __future__ import annotations

import uuid

import pytest

from oasst.client import ApiErrorCode, OasstApiError
from oasst.protocol.common import CreateFrontendUserRequest
from oasst.protocol.stats import TimeFrame
from oasst.protocol.tasks import InitialPromptTask
from tests.backend.factories import World
from tests.client.conftest import Connect, accept_tos, as_wire, run, volunteer
from tests.conftest import Keys


def test_get_and_update_a_user(connect: Connect, world: World) -> None:
    async def scenario() -> None:
        async with connect() as client:
            alice = await client.get_user(world.alice.id)
            assert (alice.id, alice.user_id, alice.enabled) == ("user-alice", world.alice.id, True)
            await client.update_user(
                world.alice.id, display_name="Alice A.", notes="helpful", show_on_leaderboard=False
            )
            changed = await client.get_user(world.alice.id)
            assert (changed.display_name, changed.notes, changed.show_on_leaderboard) == (
                "Alice A.",
                "helpful",
                False,
            )
            assert changed.enabled is True  # fields not given stay as they were
            by_name = await client.get_frontend_user("local", "user-alice")
            assert by_name.display_name == "Alice A."

            carol = await client.get_frontend_user("local", "user-carol", api_client_id=world.untrusted.id)
            assert carol.id == "user-carol"
            assert (await client.get_user(carol.user_id, api_client_id=world.untrusted.id)).id == "user-carol"

            with pytest.raises(OasstApiError) as caught:
                await client.get_user(uuid.uuid4())
            assert (caught.value.status, caught.value.error_code) == (404, 4002)

    run(scenario())


def test_a_banned_user_gets_user_disabled_until_enabled(connect: Connect) -> None:
    dora = volunteer("dora")

    async def scenario() -> None:
        async with connect() as client:
            await accept_tos(client, dora)
            user_id = (await client.get_frontend_user("local", "dora")).user_id
            assert isinstance(await client.request_task(dora, "initial_prompt"), InitialPromptTask)

            await client.update_user(user_id, enabled=False)
            assert (await client.get_user(user_id)).enabled is False
            with pytest.raises(OasstApiError) as caught:
                await client.request_task(dora, "initial_prompt")
            assert (caught.value.status, caught.value.error_code) == (503, ApiErrorCode.USER_DISABLED)

            await client.update_user(user_id, enabled=True)
            assert isinstance(await client.request_task(dora, "initial_prompt"), InitialPromptTask)

    run(scenario())


def test_tos_acceptance_through_update_user(connect: Connect) -> None:
    eve = volunteer("eve")

    async def scenario() -> None:
        async with connect() as client:
            created = await client.upsert_frontend_user(CreateFrontendUserRequest(**eve.model_dump()))
            assert created.tos_acceptance_date is None
            with pytest.raises(OasstApiError) as caught:
                await client.request_task(eve, "initial_prompt")
            assert caught.value.error_code == ApiErrorCode.USER_HAS_NOT_ACCEPTED_TOS
            await client.update_user(created.user_id, tos_acceptance=True)
            assert (await client.get_user(created.user_id)).tos_acceptance_date is not None
            assert isinstance(await client.request_task(eve, "initial_prompt"), InitialPromptTask)

    run(scenario())


def test_user_changes_need_a_trusted_key(connect: Connect, world: World, keys: Keys) -> None:
    async def scenario() -> None:
        async with connect(keys.untrusted) as client:
            for call in (
                client.update_user(world.own.user_id, enabled=False),
                client.delete_user(world.own.user_id),
                client.delete_user_messages(world.own.user_id),
                client.delete_frontend_user_messages("local", "user-carol"),
            ):
                with pytest.raises(OasstApiError) as caught:
                    await call
                assert caught.value.status == 403
            with pytest.raises(OasstApiError) as caught:
                await client.get_user(world.alice.id)  # another client's user
            assert caught.value.status == 404

    run(scenario())


def test_delete_user_anonymises_them(connect: Connect, world: World) -> None:
    async def scenario() -> None:
        async with connect() as client:
            await client.delete_user(world.bob.id)
            bob = await client.get_user(world.bob.id)
            assert bob.deleted is True and bob.id != "user-bob" and "bob" not in bob.display_name.lower()
            with pytest.raises(OasstApiError):
                await client.get_frontend_user("local", "user-bob")
            assert len(await client.user_messages(world.bob.id)) == 3  # their work stays

    run(scenario())


def test_user_lists_and_cursor_pages(connect: Connect, world: World) -> None:
    async def scenario() -> None:
        async with connect() as client:
            for name in ("ann", "ben", "cat", "dan", "alf"):
                await accept_tos(client, volunteer(name))
            names: list[str] = []
            page = await client.users_page(max_count=2, api_client_id=world.trusted.id)
            while True:
                names += [u.id for u in page.items]
                if page.next is None:
                    break
                page = await client.users_page(max_count=2, after=page.next, api_client_id=world.trusted.id)
            assert names == sorted(names) and len(names) == len(set(names)) == 7
            assert set(names) == {"alf", "ann", "ben", "cat", "dan", "user-alice", "user-bob"}

            found = await client.users_page(search_text="al", auth_method="local")
            assert {u.id for u in found.items} == {"alf", "user-alice"}
            by_display = await client.users_page(sort_key="display_name", max_count=3)
            assert by_display.sort_key == "display_name"
            assert [u.display_name for u in by_display.items] == ["Alf", "Ann", "Ben"]

            middle = await client.list_users(gte="b", lte="d", api_client_id=world.trusted.id)
            assert [u.id for u in middle] == ["ben", "cat"]
            newest = await client.list_users("display_name", desc=True, max_count=2)
            assert [u.display_name for u in newest] == ["User carol", "User bob"]
            ann = next(u for u in await client.list_users(search_text="ann") if u.id == "ann")
            after_ann = await client.list_users(gte="ann", gt_id=ann.user_id, max_count=1)
            assert [u.id for u in after_ann] == ["ben"]  # gt_id breaks the tie at "ann"
            searched = await client.list_frontend_users(gte_username="b", search_text="a")
            assert [u.id for u in searched] == ["cat", "dan", "user-alice", "user-carol"]

    run(scenario())


def test_a_users_messages(connect: Connect, world: World) -> None:
    alice, bob = as_wire(world.alice), as_wire(world.bob)

    async def scenario() -> None:
        async with connect() as client:
            newest = await client.user_messages(world.alice.id, as_user=bob)
            assert [m.text for m in newest] == ["text 4", "text 2", "text 0"]
            assert {m.user_is_author for m in newest} == {False}
            oldest = await client.user_messages(world.alice.id, desc=False, max_count=1, only_roots=True)
            assert [m.text for m in oldest] == ["text 0"]

            first = await client.user_messages_page(world.alice.id, max_count=2, as_user=alice)
            rest = await client.user_messages_page(world.alice.id, max_count=2, after=first.next)
            assert [m.text for m in first.items + rest.items] == ["text 0", "text 2", "text 4"]
            assert {m.user_is_author for m in first.items} == {True} and rest.next is None

            await client.post_emoji(world.tree.at(1).id, bob, "clap")
            own = await client.frontend_user_messages("local", "user-bob")
            assert [m.text for m in own] == ["text 5", "text 3", "text 1"]
            assert own[0].user_emojis == ["clap"]  # read as the owner
            page = await client.frontend_user_messages_page("local", "user-bob", max_count=2, desc=True)
            assert [m.text for m in page.items] == ["text 5", "text 3"]
            last = await client.frontend_user_messages_page(
                "local", "user-bob", max_count=2, desc=True, after=page.next
            )
            assert [m.text for m in last.items] == ["text 1"] and last.next is None
            back = await client.frontend_user_messages_page("local", "user-bob", desc=True, before=last.prev)
            assert [m.text for m in back.items] == ["text 5", "text 3"]

            await client.delete_frontend_user_messages("local", "user-bob")
            assert await client.frontend_user_messages("local", "user-bob") == []
            assert len(await client.frontend_user_messages("local", "user-bob", include_deleted=True)) == 3
            await client.delete_user_messages(world.alice.id)
            assert await client.user_messages(world.alice.id) == []
            assert len(await client.user_messages(world.alice.id, include_deleted=True)) == 3
            assert (await client.user_messages_page(world.alice.id, include_deleted=True)).items != []

    run(scenario())


def test_user_stats_and_leaderboard_window(connect: Connect, world: World) -> None:
    async def scenario() -> None:
        async with connect() as client:
            before = await client.user_stats(world.alice.id)
            assert set(before) == {tf.value for tf in TimeFrame}
            assert before["total"].leader_score == 0 and before["total"].rank is None
            assert await client.user_leaderboard_window(world.alice.id, "total") is None

            await client.update_leaderboards("total")
            await client.update_leaderboards()
            stats = await client.user_stats(world.alice.id)
            assert stats["total"].prompts == 1 and stats["total"].replies_prompter == 2
            bob = await client.user_score(world.bob.id, TimeFrame.total)
            assert bob.replies_assistant == 3 and bob.rank is not None
            window = await client.user_leaderboard_window(world.alice.id, "week", window_size=3)
            assert window is not None and window.time_frame == "week"
            assert [r.highlighted for r in window.leaderboard if r.user_id == world.alice.id] == [True]
            assert len(window.leaderboard) == 3  # alice, bob and carol of the other client
            assert {world.alice.id, world.bob.id} <= {r.user_id for r in window.leaderboard}

            await client.update_user(world.alice.id, show_on_leaderboard=False)
            assert await client.user_leaderboard_window(world.alice.id, "week") is None

    run(scenario())
