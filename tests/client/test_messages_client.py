"""``BackendClient`` message reads, listings, cursor pages and moderation against the real backend app."""

from __future__ import annotations

import uuid

import pytest

from oasst.client import ApiErrorCode, OasstApiError
from oasst.protocol.common import EmojiCode, EmojiOp
from tests.backend.factories import World
from tests.client.conftest import Connect, as_wire, run, volunteer
from tests.conftest import Keys


def test_navigating_a_tree(connect: Connect, world: World) -> None:
    tree = world.tree
    alice = as_wire(world.alice)

    async def scenario() -> None:
        async with connect() as client:
            conversation = await client.get_conversation(tree.at(0, 0, 0).id, as_user=alice)
            assert [m.text for m in conversation.messages] == ["text 0", "text 1", "text 2", "text 3"]
            assert [m.user_is_author for m in conversation.messages] == [True, False, True, False]
            assert [m.is_assistant for m in conversation.messages] == [False, True, False, True]

            children = await client.get_children(tree.root.id)
            assert [m.text for m in children] == ["text 1", "text 5"]
            descendants = await client.get_descendants(tree.at(0).id)
            assert descendants.id == tree.at(0).id
            assert sorted(m.text for m in descendants.messages) == ["text 2", "text 3", "text 4"]
            longest = await client.get_longest_conversation(tree.at(1).id)
            assert len(longest.messages) == 4 and longest.messages[0].text == "text 0"
            widest = await client.get_max_children(tree.at(0, 0, 0).id)
            head, *replies = widest.messages
            assert len(replies) == 2 and all(r.parent_id == head.id for r in replies)

            frontend_id = tree.at(0).frontend_message_id
            assert (await client.get_frontend_message(frontend_id)).text == "text 1"
            conversation = await client.get_frontend_conversation(frontend_id)
            assert [m.text for m in conversation.messages] == ["text 0", "text 1"]
            children = await client.get_frontend_children(frontend_id)
            assert [m.text for m in children] == ["text 2", "text 4"]
            whole = await client.get_frontend_tree(frontend_id)
            assert whole.id == tree.id and len(whole.messages) == 6

            with pytest.raises(OasstApiError) as caught:
                await client.get_frontend_conversation("no such id #1/2?")
            assert caught.value.status == 404

    run(scenario())


def test_untrusted_keys_see_only_their_own_messages(connect: Connect, world: World, keys: Keys) -> None:
    async def scenario() -> None:
        async with connect(keys.untrusted) as client:
            assert [m.text for m in await client.list_messages()] == ["untrusted root"]
            with pytest.raises(OasstApiError) as caught:
                await client.get_children(world.tree.root.id)
            assert caught.value.status == 404
            assert (await client.get_frontend_message("u-1")).text == "untrusted root"

    run(scenario())


def test_listing_filters(connect: Connect, world: World) -> None:
    async def scenario() -> None:
        async with connect() as client:
            newest_first = await client.list_messages()
            assert [m.text for m in newest_first][:3] == ["untrusted root", "text 5", "text 4"]
            oldest_first = await client.list_messages(desc=False, max_count=2)
            assert [m.text for m in oldest_first] == ["text 0", "text 1"]
            alices = await client.list_messages(auth_method="local", username="user-alice")
            assert sorted(m.text for m in alices) == ["text 0", "text 2", "text 4"]
            roots = await client.list_messages(only_roots=True, api_client_id=world.trusted.id)
            assert [m.text for m in roots] == ["text 0"]
            assert await client.list_messages(lang="de") == []
            start = world.tree.at(0, 0).created_date
            later = await client.list_messages(start_date=start, end_date=world.tree.at(1).created_date)
            assert {m.text for m in later} >= {"text 3", "text 4"} and "text 1" not in {m.text for m in later}

            with pytest.raises(OasstApiError) as caught:
                await client.list_messages(username="user-alice")  # needs auth_method too
            assert caught.value.status == 400

    run(scenario())


def test_cursor_pages_continue_without_repeats(connect: Connect, world: World) -> None:
    async def scenario() -> None:
        async with connect() as client:
            seen: list[str] = []
            page = await client.messages_page(max_count=3, include_user=True)
            while True:
                seen += [m.text for m in page.items]
                assert all(m.user is not None for m in page.items)
                if page.next is None:
                    break
                page = await client.messages_page(max_count=3, after=page.next, include_user=True)
            assert seen == [f"text {i}" for i in range(6)] + ["untrusted root"]

            back = await client.messages_page(max_count=3, before=page.prev)
            assert [m.text for m in back.items] == ["text 3", "text 4", "text 5"]
            newest = await client.messages_page(max_count=2, desc=True)
            assert newest.order == "desc" and [m.text for m in newest.items] == ["untrusted root", "text 5"]

            bobs = await client.messages_page(user_id=world.bob.id, max_count=2)
            more = await client.messages_page(user_id=world.bob.id, max_count=2, after=bobs.next)
            assert [m.text for m in bobs.items + more.items] == ["text 1", "text 3", "text 5"]
            by_name = await client.messages_page(auth_method="local", username="user-bob", only_roots=True)
            assert by_name.items == []
            by_client = await client.messages_page(api_client_id=world.untrusted.id, lang="en")
            assert [m.text for m in by_client.items] == ["untrusted root"]

    run(scenario())


def test_edits_are_kept_in_the_history_and_found_by_search(connect: Connect, world: World) -> None:
    message = world.tree.at(1)  # bob's "text 5"
    bob, moderator = as_wire(world.bob), volunteer("mod")

    async def scenario() -> None:
        async with connect() as client:
            assert await client.message_history(message.id) == []
            edited = await client.edit_message(message.id, moderator, "zebra crossing")
            assert (edited.text, edited.edited) == ("zebra crossing", True)
            assert (await client.get_message(message.id)).text == "zebra crossing"
            history = await client.message_history(message.id, as_user=bob)
            assert [r.text for r in history] == ["text 5", "zebra crossing"]
            assert [r.user_is_author for r in history] == [True, False]

            found = await client.messages_page(search_query="zebra")
            assert [m.id for m in found.items] == [message.id]

            with pytest.raises(OasstApiError) as caught:
                await client.edit_message(message.id, moderator, " ")
            assert caught.value.status == 400

    run(scenario())


def test_delete_and_undelete(connect: Connect, world: World) -> None:
    tree = world.tree
    branch = tree.at(0)  # "text 1" with "text 2", "text 3", "text 4" below

    async def scenario() -> None:
        async with connect() as client:
            await client.delete_message(branch.id)
            assert (await client.get_message(branch.id)).deleted is True
            visible = await client.get_tree(tree.id)
            assert sorted(m.text for m in visible.messages) == ["text 0", "text 5"]
            assert {m.text for m in await client.list_messages()} == {"text 0", "text 5", "untrusted root"}
            with_deleted = await client.list_messages(include_deleted=True)
            assert len(with_deleted) == 7
            assert len((await client.get_tree(tree.id, include_deleted=True)).messages) == 6
            assert len((await client.messages_page(include_deleted=True)).items) == 7

            await client.undelete_message(tree.at(0, 0).id)  # and its ancestor "text 1"
            restored = await client.get_tree(tree.id)
            assert sorted(m.text for m in restored.messages) == ["text 0", "text 1", "text 2", "text 5"]

    run(scenario())


def test_moderation_needs_a_trusted_key(connect: Connect, world: World, keys: Keys) -> None:
    async def scenario() -> None:
        async with connect(keys.untrusted) as client:
            for call in (
                client.delete_message(world.own.id),
                client.undelete_message(world.own.id),
                client.edit_message(world.own.id, volunteer("carol"), "mine"),
                client.message_history(world.own.id),
                client.set_tree_halted(world.own.id),
            ):
                with pytest.raises(OasstApiError) as caught:
                    await call
                assert (caught.value.status, caught.value.error_code) == (
                    403,
                    ApiErrorCode.API_CLIENT_NOT_AUTHORIZED,
                )

    run(scenario())


def test_a_halted_tree_reports_halted_until_resumed(connect: Connect, world: World) -> None:
    async def scenario() -> None:
        async with connect() as client:
            halted = await client.set_tree_halted(world.tree.at(0, 1).id, halt=True)
            assert (halted.message_tree_id, halted.state, halted.active) == (
                world.tree.id,
                "halted_by_moderator",
                False,
            )
            assert (await client.get_tree_state(world.tree.root.id)).state == "halted_by_moderator"
            resumed = await client.set_tree_halted(world.tree.root.id, halt=False)
            assert resumed.state != "halted_by_moderator" and resumed.active
            assert (await client.get_tree_state(world.tree.root.id)).state == resumed.state

            with pytest.raises(OasstApiError) as caught:
                await client.set_tree_halted(uuid.uuid4())
            assert caught.value.status == 404

    run(scenario())


def test_emoji_counts_follow_each_users_reactions(connect: Connect, world: World) -> None:
    message = world.tree.at(0)  # bob's
    alice, zoe = as_wire(world.alice), volunteer("zoe")

    async def scenario() -> None:
        async with connect() as client:
            first = await client.post_emoji(message.id, alice, "heart_eyes")
            assert (first.emojis, first.user_emojis, first.user_is_author) == (
                {"heart_eyes": 1},
                ["heart_eyes"],
                False,
            )
            both = await client.post_emoji(message.id, zoe, EmojiCode.heart_eyes, EmojiOp.add)
            assert both.emojis == {"heart_eyes": 2}
            again = await client.post_emoji(message.id, zoe, "heart_eyes", "add")  # idempotent
            assert again.emojis == {"heart_eyes": 2}
            toggled = await client.post_emoji(message.id, alice, EmojiCode.heart_eyes)
            assert (toggled.emojis, toggled.user_emojis) == ({"heart_eyes": 1}, [])
            seen_by_zoe = await client.get_message(message.id, as_user=zoe)
            assert seen_by_zoe.user_emojis == ["heart_eyes"]
            gone = await client.post_emoji(message.id, zoe, "heart_eyes", "remove")
            assert gone.emojis == {}
            voted = await client.post_emoji(message.id, alice, "+1")
            assert (await client.post_emoji(message.id, alice, "-1")).emojis == {"-1": 1}
            assert voted.emojis == {"+1": 1}

            with pytest.raises(OasstApiError) as caught:
                await client.post_emoji(message.id, alice, EmojiCode.skip_reply)
            assert caught.value.status == 400

    run(scenario())
