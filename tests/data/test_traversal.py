"""Tree walks: order, threads, predicates that select without pruning, deep chains."""

from __future__ import annotations

from collections.abc import Callable

from oasst.data import (
    ExportMessageNode,
    ExportMessageTree,
    count_messages,
    iter_messages,
    iter_threads,
    visit_messages_depth_first,
    visit_threads_depth_first,
)

MakeTree = Callable[..., ExportMessageTree]


def _ids(nodes: list[ExportMessageNode]) -> list[str]:
    return [n.message_id.removeprefix("t-") for n in nodes]


def test_iter_messages_is_depth_first_in_reply_order(make_tree: MakeTree) -> None:
    tree = make_tree()
    assert _ids(list(iter_messages(tree))) == ["r", "a1", "p1", "a2", "a3", "a4"]
    assert count_messages(tree) == 6
    assert count_messages(ExportMessageTree(message_tree_id="empty")) == 0


def test_iter_threads_yields_root_to_leaf_paths(make_tree: MakeTree) -> None:
    assert [_ids(t) for t in iter_threads(make_tree())] == [
        ["r", "a1", "p1", "a2"],
        ["r", "a1", "p1", "a3"],
        ["r", "a4"],
    ]


def test_visit_threads_sees_every_prefix(make_tree: MakeTree) -> None:
    tree = make_tree()
    seen: list[list[str]] = []
    visit_threads_depth_first(tree.prompt, lambda thread: seen.append(_ids(thread)))
    assert seen == [
        ["r"],
        ["r", "a1"],
        ["r", "a1", "p1"],
        ["r", "a1", "p1", "a2"],
        ["r", "a1", "p1", "a3"],
        ["r", "a4"],
    ]


def test_predicates_select_without_pruning(make_tree: MakeTree) -> None:
    tree = make_tree()
    assistants: list[ExportMessageNode] = []
    # the root fails the predicate, yet its assistant descendants are still visited
    visit_messages_depth_first(tree.prompt, assistants.append, predicate=lambda m: m.role == "assistant")
    assert _ids(assistants) == ["a1", "a2", "a3", "a4"]
    ending_in_assistant: list[list[str]] = []
    visit_threads_depth_first(
        tree.prompt, lambda t: ending_in_assistant.append(_ids(t)), predicate=lambda t: len(t) % 2 == 0
    )
    assert ending_in_assistant == [["r", "a1"], ["r", "a1", "p1", "a2"], ["r", "a1", "p1", "a3"], ["r", "a4"]]


def test_deep_chain_does_not_recurse() -> None:
    depth = 5000
    root = leaf = ExportMessageNode(message_id="0", text="t", role="prompter", replies=[])
    for i in range(1, depth):
        child = ExportMessageNode(
            message_id=str(i), parent_id=leaf.message_id, text="t", role="assistant", replies=[]
        )
        assert leaf.replies is not None
        leaf.replies.append(child)
        leaf = child
    assert count_messages(root) == depth
    assert [len(t) for t in iter_threads(root)] == [depth]
