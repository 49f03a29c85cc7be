"""``BackendClient`` labels and reports, the moderation queue, boards, stats and admin calls against the
real backend app."""

from __future__ import annotations

import pytest

from oasst.client import ApiErrorCode, OasstApiError
from oasst.protocol.common import REPORT_LABELS, TextLabel
from oasst.protocol.stats import CachedStatsName
from oasst.protocol.tasks import TextLabels
from tests.backend.factories import World
from tests.client.conftest import Connect, accept_tos, as_wire, run, volunteer
from tests.conftest import ROOT_TOKEN, Keys


def test_label_sets(connect: Connect, world: World) -> None:
    async def scenario() -> None:
        async with connect() as client:
            every = {label.name for label in (await client.valid_labels()).valid_labels}
            assert TextLabel.spam in every and TextLabel.fails_task not in every
            for message in (world.tree.root, world.tree.at(0), world.tree.at(0, 0)):
                for_message = {label.name for label in (await client.valid_labels(message.id)).valid_labels}
                assert TextLabel.spam in for_message and for_message <= {t.value for t in TextLabel}
            reports = await client.report_labels()
            assert [label.name for label in reports.valid_labels] == [t.value for t in REPORT_LABELS]
            assert all(label.display_text for label in reports.valid_labels)

    run(scenario())


def test_a_report_goes_to_the_moderation_queue(connect: Connect, world: World) -> None:
    reported = world.tree.at(0)  # bob's
    alice = as_wire(world.alice)

    async def scenario() -> None:
        async with connect() as client:
            labels = {TextLabel.quality: 0.5}
            await client.post_text_labels(TextLabels(user=alice, message_id=reported.id, labels=labels))
            assert await client.flagged_messages() == []  # a free label is no report

            report = TextLabels(
                user=alice, message_id=world.tree.at(1).id, labels={TextLabel.spam: 1.0}, is_report=True
            )
            await client.post_text_labels(report)
            await client.post_text_labels(report.model_copy(update={"message_id": reported.id}))
            seen = await client.get_message(reported.id, as_user=alice)
            assert seen.emojis == {"red_flag": 1} and seen.user_emojis == ["red_flag"]

            queue = await client.flagged_messages(processed=False)
            assert [f.message_id for f in queue] == [world.tree.at(1).id, reported.id]
            first = await client.flagged_messages_page(max_count=1)
            rest = await client.flagged_messages_page(max_count=1, after=first.next)
            assert [f.message_id for f in first.items + rest.items] == [f.message_id for f in queue]
            newest = await client.flagged_messages_page(desc=True)
            assert [f.message_id for f in newest.items] == [reported.id, world.tree.at(1).id]

            done = await client.process_flagged_message(reported.id)
            assert (done.message_id, done.processed) == (reported.id, True)
            assert [f.message_id for f in await client.flagged_messages(processed=True)] == [reported.id]
            left = await client.flagged_messages_page(processed=False)
            assert [f.message_id for f in left.items] == [world.tree.at(1).id]

            await client.update_leaderboards("total")
            board = await client.trollboard("total", enabled=True)
            bob = next(row for row in board.trollboard if row.user_id == world.bob.id)
            assert (bob.red_flags, bob.spam) == (2, 2)
            assert (await client.trollboard("total", enabled=False)).trollboard == []
            assert len((await client.trollboard("total", max_count=1)).trollboard) == 1

    run(scenario())


def test_system_and_tree_manager_stats(connect: Connect, world: World) -> None:
    async def scenario() -> None:
        async with connect() as client:
            stats = await client.system_stats()
            assert (stats.all, stats.active, stats.message_trees, stats.active_by_lang) == (
                7,
                7,
                2,
                {"en": 7},
            )
            await client.delete_message(world.tree.at(1).id)
            after = await client.system_stats()
            assert (after.active, after.deleted) == (6, 1)

            manager = await client.tree_manager_stats()
            assert manager.state_counts == await client.tree_state_counts() == {"growing": 2}
            counts = {c.message_tree_id: c.count for c in await client.tree_message_counts()}
            assert counts == {world.tree.id: 5, world.own.id: 1}
            assert {c.message_tree_id for c in manager.message_counts} == set(counts)
            assert len(await client.tree_message_counts(only_active=False)) == 2

    run(scenario())


def test_cached_stats(connect: Connect, world: World, keys: Keys) -> None:
    async def scenario() -> None:
        async with connect() as client:
            assert (await client.cached_stats()).stats_by_name == {}
            with pytest.raises(OasstApiError) as caught:
                await client.cached_stat("human_messages_by_lang")
            assert caught.value.status == 404
            await client.update_cached_stats()
            every = await client.cached_stats()
            assert set(every.stats_by_name) == {name.value for name in CachedStatsName}
            by_lang = await client.cached_stat(CachedStatsName.human_messages_by_lang)
            assert by_lang.name == "human_messages_by_lang" and by_lang.stats
        async with connect(keys.untrusted) as untrusted:
            assert (await untrusted.cached_stat("message_trees_by_state")).stats
            with pytest.raises(OasstApiError) as caught:
                await untrusted.system_stats()
            assert caught.value.status == 403

    run(scenario())


def test_backend_settings(connect: Connect, keys: Keys) -> None:
    async def scenario() -> None:
        async with connect(keys.untrusted) as untrusted:
            public = await untrusted.public_settings()
            assert public.tree_manager["goal_tree_size"] == 2 and public.rate_limits["enabled"] is False
            with pytest.raises(OasstApiError) as caught:
                await untrusted.full_settings()
            assert caught.value.status == 403
        async with connect() as client:
            full = await client.full_settings()
            assert full["tree_manager"]["goal_tree_size"] == 2
            assert ROOT_TOKEN not in str(full)  # secrets are masked

    run(scenario())


def test_purge_user(connect: Connect, world: World) -> None:
    alice = as_wire(world.alice)

    async def scenario() -> None:
        async with connect() as client:
            preview = await client.purge_user(world.bob.id)
            assert preview.preview and preview.counts.messages == 5  # his 3 replies and the 2 below them
            assert (await client.system_stats()).all == 7  # nothing removed yet

            replies = await client.purge_user_messages(world.alice.id)
            assert replies.preview and replies.counts.messages == 3  # her 2 prompter replies and 1 below
            assert (
                await client.purge_user_messages(world.alice.id, purge_initial_prompts=True)
            ).counts.trees == 1

            done = await client.purge_user(world.bob.id, preview=False)
            assert not done.preview and done.after.all < done.before.all
            assert await client.user_messages(world.bob.id, include_deleted=True) == []
            assert (await client.get_user(world.bob.id)).enabled is False  # banned

            await accept_tos(client, alice)
            spared = await client.purge_user(world.alice.id, preview=False, ban=False)
            assert not spared.preview
            assert (await client.get_user(world.alice.id)).enabled is True

    run(scenario())


def test_merge_users(connect: Connect, world: World) -> None:
    async def scenario() -> None:
        async with connect() as client:
            await client.merge_users(world.alice.id, [world.bob.id])
            texts = [m.text for m in await client.user_messages(world.alice.id, desc=False)]
            assert texts == [f"text {i}" for i in range(6)]
            with pytest.raises(OasstApiError) as caught:
                await client.get_user(world.bob.id)
            assert caught.value.status == 404

    run(scenario())


def test_api_clients_with_the_root_token(connect: Connect, world: World, keys: Keys) -> None:
    async def scenario() -> None:
        async with connect(None) as admin:
            clients = {c.id: c for c in await admin.list_api_clients(ROOT_TOKEN)}
            assert set(clients) == {world.trusted.id, world.untrusted.id}
            assert clients[world.trusted.id].trusted and not clients[world.untrusted.id].trusted
            disabled = await admin.update_api_client(ROOT_TOKEN, world.untrusted.id, enabled=False)
            assert disabled.enabled is False
            with pytest.raises(OasstApiError) as caught:
                await admin.list_api_clients("wrong-token")
            assert caught.value.error_code == ApiErrorCode.ROOT_TOKEN_NOT_AUTHORIZED
        async with connect(keys.untrusted) as untrusted:
            with pytest.raises(OasstApiError) as caught:
                await untrusted.list_messages()
            assert (caught.value.status, caught.value.error_code) == (
                403,
                ApiErrorCode.API_CLIENT_NOT_AUTHORIZED,
            )
        async with connect(None) as admin:
            assert (await admin.update_api_client(ROOT_TOKEN, world.untrusted.id, enabled=True)).enabled
        async with connect(keys.untrusted) as untrusted:
            assert len(await untrusted.list_messages()) == 1

    run(scenario())


def test_close_a_collective_task(connect: Connect) -> None:
    fay = volunteer("fay")

    async def scenario() -> None:
        async with connect() as client:
            await accept_tos(client, fay)
            task = await client.request_task(fay, "initial_prompt", collective=True)
            await client.ack_task(task.id, "fe-collective")
            await client.close_task("fe-collective")
            with pytest.raises(OasstApiError) as caught:
                await client.close_task("fe-collective")
            assert caught.value.error_code == 2105  # already done

            single = await client.request_task(fay, "initial_prompt")
            await client.ack_task(single.id, "fe-single")
            with pytest.raises(OasstApiError) as caught:
                await client.close_task("fe-single")
            assert caught.value.error_code == 2106  # not collective

    run(scenario())
