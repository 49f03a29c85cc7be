"""Chats → oasst trees and preference records (``oasst.inference.loop``), on hand-built chats."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from oasst.data import Anonymizer, ExportMessageTree, iter_messages, read_message_trees, write_message_trees
from oasst.inference.loop import LoopOptions, chat_preferences, chat_to_trees, dpo_record, rm_records
from oasst.inference.protocol import ChatRead, CreateChat, MessageRead, MessageState, Role
from oasst.inference.server.db import Database
from oasst.inference.server.services import chats as chat_service
from oasst.inference.server.services.export import OptedInChat, ReportRecord, iter_opted_in_chats
from oasst.training.datasets import TreeFilter, sft_records, split_of, split_records
from oasst.training.datasets_io import read_records, write_records

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


class ChatBuilder:
    """A chat tree written by hand: ``user``/``bot`` add messages and return their ids."""

    def __init__(self, *, system_prompt: str | None = None) -> None:
        self.messages: list[MessageRead] = []
        self.reports: list[ReportRecord] = []
        self.chat = ChatRead(
            id=f"chat-{next(_ids)}",
            title="t",
            hidden=False,
            allow_data_use=True,
            system_prompt=system_prompt,
            created_at=T0,
            modified_at=T0,
        )

    def _add(self, role: Role, content: str, parent: str | None, **fields: Any) -> str:
        n = len(self.messages)
        message = MessageRead(
            id=f"m{next(_ids):04d}",
            chat_id=self.chat.id,
            parent_id=parent,
            role=role,
            content=content,
            state=fields.pop("state", MessageState.manual if role == Role.user else MessageState.complete),
            created_at=T0 + timedelta(seconds=n),
            **fields,
        )
        self.messages.append(message)
        return message.id

    def user(self, content: str, parent: str | None = None) -> str:
        return self._add(Role.user, content, parent)

    def bot(self, content: str, parent: str, **fields: Any) -> str:
        fields.setdefault("model", "tiny-sft")
        return self._add(Role.assistant, content, parent, **fields)

    def drafts(self, parent: str, *texts: str, picked: int | None, **fields: Any) -> list[str]:
        group = f"g{next(_ids)}"
        return [
            self.bot(t, parent, draft_group=group, selected=None if picked is None else i == picked, **fields)
            for i, t in enumerate(texts)
        ]

    def record(self, user_id: str = "alice") -> OptedInChat:
        return OptedInChat(
            user_id=user_id, chat=self.chat, messages=list(self.messages), reports=self.reports
        )


def single_tree(record: OptedInChat, options: LoopOptions | None = None) -> ExportMessageTree | None:
    """The chat's tree, for chats with one first message."""
    trees = chat_to_trees(record, options)
    assert len(trees) <= 1
    return trees[0] if trees else None


def pair_texts(record: OptedInChat, options: LoopOptions | None = None) -> set[tuple[str, str, str]]:
    return {(p.chosen.content, p.rejected.content, p.source) for p in chat_preferences(record, options)}


# --------------------------------------------------------------------------------------- preferences


def test_the_picked_draft_is_chosen_over_each_other_draft() -> None:
    chat = ChatBuilder()
    q = chat.user("Name a colour.")
    chat.drafts(q, "Red.", "Blue.", "Green.", picked=1)
    pairs = chat_preferences(chat.record())
    assert {(p.chosen.content, p.rejected.content, p.source) for p in pairs} == {
        ("Blue.", "Red.", "draft_pick"),
        ("Blue.", "Green.", "draft_pick"),
    }
    assert all(p.prompt == [{"role": "user", "content": "Name a colour."}] for p in pairs)
    # three drafts and one pick do not order the other two: an RM group of two per pair
    assert sorted(r["replies"] for r in rm_records(pairs)) == [["Blue.", "Green."], ["Blue.", "Red."]]


def test_two_drafts_and_a_pick_make_one_rm_group() -> None:
    chat = ChatBuilder()
    q = chat.user("Hi")
    chat.drafts(q, "Hello!", "Go away.", picked=0)
    (group,) = rm_records(chat_preferences(chat.record()))
    assert group["replies"] == ["Hello!", "Go away."]
    assert group["prompt"] == [{"role": "user", "content": "Hi"}]


def test_unpicked_and_unfinished_drafts_give_no_pairs() -> None:
    chat = ChatBuilder()
    q = chat.user("Q")
    chat.drafts(q, "a", "b", picked=None)
    q2 = chat.user("Q2", chat.bot("A", q))
    chat.drafts(q2, "good", "broken", picked=0)
    chat.messages[-1] = chat.messages[-1].model_copy(update={"state": MessageState.failed})
    assert chat_preferences(chat.record()) == []


def test_upvoted_replies_are_chosen_over_downvoted_siblings() -> None:
    chat = ChatBuilder()
    q = chat.user("Tell me a joke.")
    chat.bot("A good joke.", q, score=1)
    chat.bot("A bad joke.", q, score=-1)
    chat.bot("An unvoted joke.", q)
    chat.bot("A cancelled joke.", q, score=-1, state=MessageState.cancelled)
    assert pair_texts(chat.record()) == {("A good joke.", "A bad joke.", "vote")}
    with_neutral = pair_texts(chat.record(), LoopOptions(neutral_is_rejected=True))
    assert with_neutral == {
        ("A good joke.", "A bad joke.", "vote"),
        ("A good joke.", "An unvoted joke.", "vote"),
    }
    # +1 > 0 > -1 is no full order: 0 vs -1 is unknown, so each pair is its own group
    groups = rm_records(chat_preferences(chat.record(), LoopOptions(neutral_is_rejected=True)))
    assert len(groups) == 2


def test_votes_only_compare_siblings() -> None:
    chat = ChatBuilder()
    q1 = chat.user("Q1")
    a1 = chat.bot("A1 (liked)", q1, score=1)
    q2 = chat.user("Q2", a1)
    chat.bot("A2 (disliked)", q2, score=-1)
    assert chat_preferences(chat.record()) == []


def test_contradicting_preferences_are_dropped() -> None:
    chat = ChatBuilder()
    q = chat.user("Q")
    picked, other = chat.drafts(q, "picked but downvoted", "not picked but upvoted", picked=0)
    chat.messages = [
        m.model_copy(update={"score": -1 if m.id == picked else 1 if m.id == other else m.score})
        for m in chat.messages
    ]
    assert chat_preferences(chat.record()) == []


def test_pick_and_vote_agreeing_give_one_pair() -> None:
    chat = ChatBuilder()
    q = chat.user("Q")
    chat.drafts(q, "best", "worst", picked=0)
    chat.messages[-2] = chat.messages[-2].model_copy(update={"score": 1})
    chat.messages[-1] = chat.messages[-1].model_copy(update={"score": -1})
    assert pair_texts(chat.record()) == {("best", "worst", "draft_pick")}


def test_prompts_hold_the_whole_thread_and_optionally_the_system_prompt() -> None:
    chat = ChatBuilder(system_prompt="Be brief.")
    q1 = chat.user("Q1")
    q2 = chat.user("Q2", chat.bot("A1", q1))
    chat.bot("good", q2, score=1)
    chat.bot("bad", q2, score=-1)
    (pair,) = chat_preferences(chat.record())
    assert [t["content"] for t in pair.prompt] == ["Q1", "A1", "Q2"]
    (with_system,) = chat_preferences(chat.record(), LoopOptions(include_system=True))
    assert with_system.prompt[0] == {"role": "system", "content": "Be brief."}
    record = dpo_record(pair)
    assert record["chosen"] == [{"role": "assistant", "content": "good"}]
    assert record["rejected"] == [{"role": "assistant", "content": "bad"}]
    assert record["tree_id"] == pair.tree_id == chat.messages[0].id and record["lang"] == "und"


def test_preference_files_are_accepted_by_training(tmp_path: Path) -> None:
    chat = ChatBuilder()
    q = chat.user("Q")
    chat.drafts(q, "a", "b", "c", picked=2)
    q2 = chat.user("Q2", chat.bot("d", q))
    chat.bot("up", q2, score=1)
    chat.bot("down", q2, score=-1)
    pairs = chat_preferences(chat.record(), LoopOptions(lang="en"))
    assert write_records(tmp_path / "p.dpo.jsonl", (dpo_record(p) for p in pairs)) == 3
    dpo = list(read_records(tmp_path / "p.dpo.jsonl", kind="dpo"))
    assert len(dpo) == 3 and {r["lang"] for r in dpo} == {"en"}
    assert write_records(tmp_path / "p.rm.jsonl", rm_records(pairs)) == 3
    rm = list(read_records(tmp_path / "p.rm.jsonl", kind="rm"))
    assert sorted(r["replies"] for r in rm) == [["c", "a"], ["c", "b"], ["up", "down"]]


# --------------------------------------------------------------------------------------------- trees


def sample_chat() -> ChatBuilder:
    chat = ChatBuilder()
    q = chat.user("What is 2+2?")
    a = chat.bot("4", q, score=1)
    chat.bot("5", q, score=-1)
    chat.bot("", q, state=MessageState.pending)  # still generating: left out
    stopped = chat.bot("Let me th", q, state=MessageState.cancelled)
    chat.user("under a stopped reply", stopped)  # left out with its parent
    q2 = chat.user("And 3+3?", a)
    chat.drafts(q2, "6", "seven", picked=0, model="tiny-rl")
    chat.reports.append(ReportRecord(message_id=a, report_type="feedback", reason="too short"))
    return chat


def test_chats_become_oasst_trees() -> None:
    chat = sample_chat()
    tree = single_tree(chat.record("alice"), LoopOptions(lang="en"))
    assert tree is not None and tree.prompt is not None
    assert tree.message_tree_id == tree.prompt.message_id == chat.messages[0].id
    assert tree.tree_state is None and tree.origin == "oasst-inference"
    nodes = {n.text: n for n in iter_messages(tree)}
    assert set(nodes) == {"What is 2+2?", "4", "5", "And 3+3?", "6", "seven"}
    prompt, four, five = nodes["What is 2+2?"], nodes["4"], nodes["5"]
    assert (prompt.role, prompt.user_id, prompt.synthetic, prompt.lang) == ("prompter", "alice", False, "en")
    assert (four.role, four.user_id, four.synthetic, four.model_name) == ("assistant", None, True, "tiny-sft")
    assert nodes["6"].model_name == "tiny-rl" and nodes["6"].parent_id == nodes["And 3+3?"].message_id
    # votes: the backend's thumbs emojis and score events; reports as report events
    assert four.emojis == {"+1": 1} and five.emojis == {"-1": 1}
    assert four.events is not None and five.events is not None
    assert [e.model_dump() for e in four.events["score"]] == [
        {"type": "score", "user_id": "alice", "score": 1}
    ]
    assert [(e.type, getattr(e, "reason", None)) for e in four.events["report"]] == [("report", "too short")]
    # the draft pick: an event on the message the drafts answer
    q2 = nodes["And 3+3?"]
    assert q2.events is not None
    (pick,) = q2.events["draft_pick"]
    assert pick.model_dump() == {
        "type": "draft_pick",
        "user_id": "alice",
        "selected_message_id": nodes["6"].message_id,
        "draft_message_ids": [nodes["6"].message_id, nodes["seven"].message_id],
    }


def test_an_edited_first_message_starts_a_tree_of_its_own() -> None:
    chat = ChatBuilder()
    first = chat.user("What is 2+2?")
    chat.bot("4", first, score=1)
    chat.bot("22", first, score=-1)
    edited = chat.user("What is two plus two, in words?")  # the first message, edited: a second root
    chat.drafts(edited, "four", "4", picked=0)
    unanswered = chat.user("And in French?")  # edited again, never answered: no tree
    assert unanswered
    record = chat.record()
    trees = chat_to_trees(record, LoopOptions(lang="en"))
    assert [t.message_tree_id for t in trees] == [first, edited]
    texts = [{n.text for n in iter_messages(t)} for t in trees]
    assert texts == [{"What is 2+2?", "4", "22"}, {"What is two plus two, in words?", "four", "4"}]
    # each preference belongs to the tree its prompt is in
    pairs = {(p.chosen.content, p.rejected.content): p for p in chat_preferences(record)}
    assert pairs[("4", "22")].tree_id == first and pairs[("four", "4")].tree_id == edited
    assert pairs[("four", "4")].prompt == [{"role": "user", "content": "What is two plus two, in words?"}]


def test_every_tree_and_pair_of_a_chat_stays_on_one_side_of_a_split() -> None:
    """An edited first message starts a tree of its own that asks nearly the same: if the two trees fell
    on different sides of a train/validation split, validation would measure memorising."""
    chats = []
    for n in range(40):
        chat = ChatBuilder()
        first = chat.user(f"Question {n}?")
        chat.bot("yes", first, score=1)
        chat.bot("no", first, score=-1)
        edited = chat.user(f"Question {n}, asked again?")
        chat.drafts(edited, "maybe", "perhaps", picked=0)
        chats.append(chat.record())
    trees = [tree for record in chats for tree in chat_to_trees(record, LoopOptions(lang="en"))]
    records = list(sft_records(trees, TreeFilter(states=None, include_synthetic=True)))
    records += [dpo_record(p) for record in chats for p in chat_preferences(record)]
    assert {t.split_group for t in trees} == {record.chat.id for record in chats}
    assert all(r["split_group"].startswith("chat-") for r in records)
    # by tree id alone, some chat would straddle the split; by split group none does
    by_tree = {(r["split_group"], split_of(r["tree_id"], 0.5)) for r in records}
    assert len(by_tree) > len(chats)
    train, validation = split_records(records, 0.5)
    assert train and validation
    assert not {r["split_group"] for r in train} & {r["split_group"] for r in validation}
    # anonymised: still one group per chat, and not the chat's id
    options = LoopOptions(anonymizer=Anonymizer("secret"))
    groups = {t.split_group for t in chat_to_trees(chats[0], options)}
    groups |= {p.split_group for p in chat_preferences(chats[0], options)}
    assert len(groups) == 1 and chats[0].chat.id not in groups


def test_language_comes_from_the_option_a_detector_or_und() -> None:
    record = sample_chat().record()
    for options, expected in [
        (None, "und"),
        (LoopOptions(lang="de"), "de"),
        (LoopOptions(detect_lang=lambda text: "fr" if "?" in text else None), "fr"),
        (LoopOptions(detect_lang=lambda text: None), "und"),
    ]:
        tree = single_tree(record, options)
        assert tree is not None and {n.lang for n in iter_messages(tree)} == {expected}


def test_chats_without_a_finished_reply_give_no_tree() -> None:
    chat = ChatBuilder()
    q = chat.user("Hello?")
    chat.bot("", q, state=MessageState.failed, error="worker_failed")
    assert single_tree(chat.record()) is None
    assert single_tree(ChatBuilder().record()) is None


def test_exported_trees_read_back_and_feed_training(tmp_path: Path) -> None:
    trees = [t for t in (single_tree(sample_chat().record(), LoopOptions(lang="en")) for _ in range(3)) if t]
    path = tmp_path / "chats.trees.jsonl"
    assert write_message_trees(path, trees, exclude_none=True) == 3
    back = list(read_message_trees(path))
    assert [t.model_dump() for t in back] == [t.model_dump() for t in trees]
    assert {t.split_group for t in back} == {t.split_group for t in trees} != {None}
    # unreviewed model output: training skips it by default and takes it when asked
    assert list(sft_records(back, TreeFilter())) == []
    records = list(sft_records(back, TreeFilter(states=None, include_synthetic=True)))
    assert records and all(r["messages"][-1]["role"] == "assistant" for r in records)
    assert {r["tree_id"] for r in records} == {t.message_tree_id for t in trees}


def test_the_backend_importer_accepts_the_trees() -> None:
    from oasst.backend.services.importer import ImportOptions, check_tree

    tree = single_tree(sample_chat().record())
    assert tree is not None
    assert check_tree(ExportMessageTree.model_validate_json(tree.model_dump_json()), ImportOptions()) is None


def test_anonymized_ids_still_join_up() -> None:
    record = sample_chat().record("alice")
    options = LoopOptions(anonymizer=Anonymizer("secret"))
    tree = single_tree(record, options)
    assert tree is not None
    ids = {n.message_id for n in iter_messages(tree)}
    assert not ids & {m.id for m in record.messages}
    assert {n.user_id for n in iter_messages(tree)} - {None} == {
        Anonymizer("secret").anonymize("user", "alice")
    }
    for node in iter_messages(tree):
        for event in (node.events or {}).get("draft_pick", []):
            extra = event.model_extra or {}
            assert extra["selected_message_id"] in ids and set(extra["draft_message_ids"]) <= ids
    pairs = chat_preferences(record, options)
    assert {p.tree_id for p in pairs} == {tree.message_tree_id}
    assert {dpo_record(p, options)["chosen_id"] for p in pairs} <= ids


# ------------------------------------------------------------------------------- from the server's store


def test_opted_out_chats_never_appear(inf_db: Database) -> None:
    """Chats built through the server's services; only the opted-in one is read and converted."""

    def build(session: Any) -> None:
        for owner, allow in [("alice", True), ("bob", False)]:
            chat = chat_service.create_chat(
                session, user_id=owner, display_name=owner, body=CreateChat(allow_data_use=allow)
            )
            q = chat_service.add_user_message(
                session, chat, parent_id=None, content=f"{owner}'s question", max_messages=50, max_length=1000
            )
            from oasst.inference.protocol import SamplingParameters

            (reply,) = chat_service.add_assistant_messages(
                session,
                chat,
                parent_id=q.id,
                model="m",
                sampling=SamplingParameters(),
                drafts=1,
                max_messages=50,
            )
            reply.state = MessageState.complete.value
            reply.content = f"answer for {owner}"

    inf_db.write(build)
    records = inf_db.read(lambda s: list(iter_opted_in_chats(s)))
    assert [r.user_id for r in records] == ["alice"]
    trees = [single_tree(r) for r in records]
    texts = {n.text for t in trees if t for n in iter_messages(t)}
    assert texts == {"alice's question", "answer for alice"}
