"""SFT threads, RM groups, DPO pairs, RL prompts, filters and the per-tree split, on a hand-made tree whose
counts can be worked out by hand and on the real oasst2 sample."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oasst.data import ExportMessageNode, ExportMessageTree, OasstDataError, iter_messages, read_message_trees
from oasst.training.datasets import (
    TreeFilter,
    dpo_pairs,
    dpo_records,
    extract,
    filter_trees,
    prune_tree,
    ranked_groups,
    rl_prompts,
    rl_records,
    rm_records,
    sft_records,
    sft_threads,
    split_of,
    split_records,
)
from oasst.training.datasets_io import check_record, read_records, write_records
from oasst.training.datasets_stats import export_stats
from tests.conftest import sample_missing

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "oasst2_sample.trees.jsonl"


def node(
    mid: str, role: str, replies: list[ExportMessageNode] | None = None, **fields: Any
) -> ExportMessageNode:
    return ExportMessageNode(
        message_id=mid,
        text=f"text of {mid}",
        role=role,
        lang=fields.pop("lang", "en"),
        replies=replies,
        **fields,
    )


def hand_tree(tree_id: str = "t1", state: str = "ready_for_export", lang: str = "en") -> ExportMessageTree:
    """P0 ─┬─ A1 (rank 0) ─┬─ P2 ─┬─ A5 (rank 1)
    │                │      └─ A6 (rank 0)
    │                └─ P3 (leaf)
    ├─ A2 (rank 1) ── P4 (leaf)
    ├─ A3 (rank 2)
    └─ A4 (unranked, deleted)
    """
    p2 = node("P2", "prompter", [node("A5", "assistant", rank=1), node("A6", "assistant", rank=0)])
    a1 = node("A1", "assistant", [p2, node("P3", "prompter")], rank=0)
    a2 = node("A2", "assistant", [node("P4", "prompter")], rank=1)
    root = node(
        "P0",
        "prompter",
        [a1, a2, node("A3", "assistant", rank=2), node("A4", "assistant", deleted=True)],
        lang=lang,
    )
    return ExportMessageTree(message_tree_id=tree_id, tree_state=state, prompt=root)


def ids(thread: list[ExportMessageNode]) -> list[str]:
    return [m.message_id for m in thread]


def pruned(tree: ExportMessageTree, tree_filter: TreeFilter | None = None) -> ExportMessageTree:
    result = prune_tree(tree, tree_filter or TreeFilter())
    assert result is not None
    return result


@pytest.fixture(scope="module")
def sample() -> list[ExportMessageTree]:
    if not SAMPLE.exists():
        sample_missing(f"the oasst2 sample at {SAMPLE}")
    return list(read_message_trees(SAMPLE))


def usable(
    trees: list[ExportMessageTree], tree_filter: TreeFilter | None = None
) -> Iterator[ExportMessageTree]:
    return filter_trees(trees, tree_filter or TreeFilter())


# --- the hand-made tree ----------------------------------------------------------------------------


def test_sft_threads_are_one_per_assistant_reply_with_no_assistant_below() -> None:
    threads = [ids(t) for t in sft_threads(pruned(hand_tree()))]
    assert threads == [
        ["P0", "A1", "P2", "A5"],
        ["P0", "A1", "P2", "A6"],
        ["P0", "A2"],  # the prompter leaf P4 is cut off: a thread ends with an assistant reply
        ["P0", "A3"],
    ]
    # the deleted A4 comes back when deleted messages are allowed
    with_deleted = pruned(hand_tree(), TreeFilter(include_deleted=True))
    assert ["P0", "A4"] in [ids(t) for t in sft_threads(with_deleted)]


def test_top_k_keeps_only_the_k_best_ranked_replies() -> None:
    tree = pruned(hand_tree())
    assert [ids(t) for t in sft_threads(tree, top_k=1)] == [["P0", "A1", "P2", "A6"]]
    assert [ids(t) for t in sft_threads(tree, top_k=2)] == [
        ["P0", "A1", "P2", "A5"],
        ["P0", "A1", "P2", "A6"],
        ["P0", "A2"],
    ]
    # an unranked reply among ranked siblings can't be shown to be in the top k
    assert all(
        "A4" not in ids(t)
        for t in sft_threads(pruned(hand_tree(), TreeFilter(include_deleted=True)), top_k=3)
    )


def test_best_path_follows_rank_zero_and_the_next_best_once_it_is_gone() -> None:
    assert [ids(t) for t in sft_threads(pruned(hand_tree()), best_path=True)] == [["P0", "A1", "P2", "A6"]]
    tree = hand_tree()
    assert tree.prompt is not None and tree.prompt.replies is not None
    tree.prompt.replies[0].deleted = True  # the best reply A1 is deleted: A2 is now the best
    assert [ids(t) for t in sft_threads(pruned(tree), best_path=True)] == [["P0", "A2"]]


def test_rm_groups_dpo_pairs_and_rl_prompts_of_the_hand_tree() -> None:
    tree = pruned(hand_tree())
    groups = [(ids(prompt), ids(replies)) for prompt, replies in ranked_groups(tree)]
    assert groups == [(["P0"], ["A1", "A2", "A3"]), (["P0", "A1", "P2"], ["A6", "A5"])]
    all_pairs = [(c.message_id, r.message_id) for _, c, r in dpo_pairs(tree)]
    assert all_pairs == [("A1", "A2"), ("A1", "A3"), ("A2", "A3"), ("A6", "A5")]
    best_pairs = [(c.message_id, r.message_id) for _, c, r in dpo_pairs(tree, pairing="best")]
    assert best_pairs == [("A1", "A2"), ("A1", "A3"), ("A6", "A5")]
    assert sorted(ids(p)[-1] for p in rl_prompts(tree)) == ["P0", "P2", "P3", "P4"]


def test_records_are_trl_conversational_format() -> None:
    trees = [hand_tree()]
    sft = next(sft_records(trees))
    assert sft == {
        "messages": [
            {"role": "user", "content": "text of P0"},
            {"role": "assistant", "content": "text of A1"},
            {"role": "user", "content": "text of P2"},
            {"role": "assistant", "content": "text of A5"},
        ],
        "tree_id": "t1",
        "lang": "en",
    }
    rm = next(rm_records(trees))
    assert rm["prompt"] == [{"role": "user", "content": "text of P0"}]
    assert rm["replies"] == ["text of A1", "text of A2", "text of A3"]
    dpo = next(dpo_records(trees))
    assert dpo["chosen"] == [{"role": "assistant", "content": "text of A1"}]
    assert dpo["rejected"] == [{"role": "assistant", "content": "text of A2"}]
    rl = list(rl_records(trees))
    assert all(r["prompt"][-1]["role"] == "user" for r in rl) and len(rl) == 4
    for kind, record in (("sft", sft), ("rm", rm), ("dpo", dpo), ("rl", rl[0])):
        check_record(record, kind)  # type: ignore[arg-type]


def test_filters_on_state_review_synthetic_language_and_length() -> None:
    assert list(sft_records([hand_tree(state="growing")])) == []
    assert len(list(sft_records([hand_tree(state="growing")], TreeFilter(states=None)))) == 4
    rejected = hand_tree()
    assert rejected.prompt is not None and rejected.prompt.replies is not None
    rejected.prompt.replies[0].review_result = False  # A1 and everything below it goes
    assert [ids(t) for t in sft_threads(pruned(rejected))] == [["P0", "A2"], ["P0", "A3"]]
    assert len(list(sft_threads(pruned(rejected, TreeFilter(include_rejected=True))))) == 4
    synthetic = hand_tree()
    assert synthetic.prompt is not None and synthetic.prompt.replies is not None
    synthetic.prompt.replies[2].synthetic = True
    assert ["P0", "A3"] not in [ids(t) for t in sft_threads(pruned(synthetic))]
    assert ["P0", "A3"] in [
        ids(t) for t in sft_threads(pruned(synthetic, TreeFilter(include_synthetic=True)))
    ]
    assert prune_tree(hand_tree(lang="de"), TreeFilter(langs=frozenset({"en"}))) is None
    assert prune_tree(hand_tree(lang="de"), TreeFilter(langs=frozenset({"de"}))) is not None
    # texts are "text of XX": 10 characters
    assert prune_tree(hand_tree(), TreeFilter(min_length=11)) is None
    assert len(list(sft_records([hand_tree()], TreeFilter(max_length=10)))) == 4


def test_per_message_language_drops_replies_in_other_languages() -> None:
    tree = hand_tree()
    assert tree.prompt is not None and tree.prompt.replies is not None
    tree.prompt.replies[1].lang = "fr"
    only_en = TreeFilter(langs=frozenset({"en"}), per_message_lang=True)
    assert ["P0", "A2"] not in [ids(t) for t in sft_threads(pruned(tree, only_en))]
    assert ["P0", "A2"] in [ids(t) for t in sft_threads(pruned(tree, TreeFilter(langs=frozenset({"en"}))))]


def test_pruning_leaves_the_input_tree_alone() -> None:
    tree = hand_tree()
    before = tree.model_dump()
    pruned(tree, TreeFilter(min_length=0, max_length=10))
    assert tree.model_dump() == before


def test_extract_refuses_options_that_do_not_apply() -> None:
    with pytest.raises(ValueError, match="SFT"):
        list(extract([hand_tree()], "rm", top_k=1))
    with pytest.raises(ValueError, match="DPO"):
        list(extract([hand_tree()], "sft", pairing="best"))
    with pytest.raises(ValueError, match="top_k"):
        list(extract([hand_tree()], "sft", top_k=0))


# --- the real sample -------------------------------------------------------------------------------


def test_sample_figures(sample: list[ExportMessageTree]) -> None:
    stats = export_stats(sample)
    assert (stats.trees, stats.messages) == (551, 1552)
    assert stats.usable_trees == stats.states["ready_for_export"] == 96
    assert stats.sft_threads == len(list(sft_records(sample)))
    assert stats.rm_groups == len(list(rm_records(sample)))
    assert stats.dpo_pairs == len(list(dpo_records(sample)))
    assert stats.rl_prompts == len(list(rl_records(sample)))
    # every group of K replies gives K(K-1)/2 pairs, or K-1 best-vs-rest
    sizes = [len(r["replies"]) for r in rm_records(sample)]
    assert stats.dpo_pairs == sum(k * (k - 1) // 2 for k in sizes)
    assert len(list(dpo_records(sample, pairing="best"))) == sum(k - 1 for k in sizes)
    # one best path per usable tree whose prompt got any reply
    assert len(list(sft_records(sample, best_path=True))) <= 96
    assert (
        len(list(sft_records(sample, top_k=1))) < len(list(sft_records(sample, top_k=2))) < stats.sft_threads
    )


def _siblings(tree: ExportMessageTree) -> dict[str, list[ExportMessageNode]]:
    parent_of: dict[str, list[ExportMessageNode]] = {}
    for message in iter_messages(tree):
        for reply in message.replies or ():
            parent_of[reply.message_id] = message.replies or []
    return parent_of


def test_sample_best_path_takes_the_best_ranked_reply_at_every_ranked_level(
    sample: list[ExportMessageTree],
) -> None:
    checked = 0
    for tree in usable(sample):
        siblings = _siblings(tree)
        for thread in sft_threads(tree, best_path=True):
            for message in thread[1:]:
                ranks = [s.rank for s in siblings[message.message_id] if s.rank is not None]
                if ranks:
                    assert message.rank == min(ranks)
                    checked += 1
    assert checked > 100


def test_sample_top_k_excludes_replies_ranked_k_or_worse(sample: list[ExportMessageTree]) -> None:
    for k in (1, 2):
        for tree in usable(sample):
            siblings = _siblings(tree)
            for thread in sft_threads(tree, top_k=k):
                assert thread[-1].role == "assistant"
                for message in thread[1:]:
                    group = [s for s in siblings[message.message_id] if s.role == "assistant"]
                    if message.role == "assistant" and len(group) > 1:
                        better = [s for s in group if s.rank is not None and s.rank < (message.rank or 0)]
                        assert message.rank is not None and len(better) < k


def test_sample_rm_groups_are_best_first_and_dpo_chosen_always_ranks_better(
    sample: list[ExportMessageTree],
) -> None:
    groups = pairs = 0
    for tree in usable(sample):
        for prompt, replies in ranked_groups(tree):
            ranks = [r.rank for r in replies]
            assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks) and len(ranks) >= 2
            assert prompt[-1].role == "prompter"
            groups += 1
        for _, chosen, rejected in dpo_pairs(tree):
            assert chosen.rank is not None and rejected.rank is not None and chosen.rank < rejected.rank
            pairs += 1
    assert groups > 100 and pairs > groups


def test_sample_default_filter_keeps_no_deleted_or_rejected_text(sample: list[ExportMessageTree]) -> None:
    ready = [t for t in sample if t.tree_state == "ready_for_export"]
    bad = {m.text for t in ready for m in iter_messages(t) if m.deleted or m.review_result is False}
    good = {m.text for t in ready for m in iter_messages(t) if not m.deleted and m.review_result is not False}
    bad -= good  # a text that also appears as a good message proves nothing
    assert bad
    texts = {m["content"] for r in sft_records(sample) for m in r["messages"]}
    assert not texts & bad
    included = TreeFilter(include_deleted=True, include_rejected=True)
    texts_all = {m["content"] for r in sft_records(sample, included) for m in r["messages"]}
    assert texts_all & bad


def test_sample_language_filter(sample: list[ExportMessageTree]) -> None:
    spanish = list(sft_records(sample, TreeFilter(langs=frozenset({"es"}))))
    assert spanish and {r["lang"] for r in spanish} == {"es"}
    both = list(sft_records(sample, TreeFilter(langs=frozenset({"en", "es"}))))
    english = list(sft_records(sample, TreeFilter(langs=frozenset({"en"}))))
    assert len(both) == len(english) + len(spanish)


def test_split_keeps_each_tree_on_one_side_and_is_deterministic(sample: list[ExportMessageTree]) -> None:
    records = list(sft_records(sample, TreeFilter(states=None)))
    train, validation = split_records(records, 0.2, seed=1)
    assert len(train) + len(validation) == len(records)
    assert not {r["tree_id"] for r in train} & {r["tree_id"] for r in validation}
    assert split_records(records, 0.2, seed=1) == (train, validation)
    other_train, _ = split_records(records, 0.2, seed=2)
    assert other_train != train
    trees = {t.message_tree_id for t in sample}
    held_out = sum(split_of(t, 0.2, seed=1) == "validation" for t in trees)
    assert 0.12 * len(trees) < held_out < 0.28 * len(trees)
    assert all(split_of(t, 0.0) == "train" for t in trees)
    assert all(split_of(t, 1.0) == "validation" for t in trees)
    with pytest.raises(ValueError):
        split_of("x", 1.5)


# --- records as JSONL ------------------------------------------------------------------------------


def test_records_round_trip_through_jsonl_and_gzip(tmp_path: Path) -> None:
    records = list(sft_records([hand_tree()]))
    for name in ("r.jsonl", "r.jsonl.gz"):
        assert write_records(tmp_path / name, records) == 4
        assert list(read_records(tmp_path / name, "sft")) == records
    with gzip.open(tmp_path / "r.jsonl.gz", "rt") as f:
        assert len(f.readlines()) == 4


def test_a_bad_record_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_records(path, sft_records([hand_tree()]))
    with path.open("a") as f:
        f.write('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(
        OasstDataError, match=r"r\.jsonl:5: 'messages' must end with a message of role assistant"
    ):
        list(read_records(path, "sft"))
    path.write_text('{"messages": []}\nnot json\n')
    with pytest.raises(OasstDataError, match=r":2: invalid JSON"):
        list(read_records(path))


def test_records_without_tree_id_get_a_content_id(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    line = '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
    path.write_text(line * 2)
    first, second = read_records(path, "sft")
    assert first["tree_id"] == second["tree_id"] and first["lang"] == "und"


def test_the_dataset_modules_import_no_torch_or_datasets() -> None:
    import subprocess
    import sys

    code = (
        "import sys, oasst.training.datasets, oasst.training.datasets_io, oasst.training.datasets_stats, "
        "oasst.training.formats, oasst.training.mixing; "
        "print(sorted({'torch', 'transformers', 'trl', 'datasets'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
