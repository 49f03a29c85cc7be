"""Walking message trees: every message, every root-to-node thread, every root-to-leaf thread.

All walks are iterative (an explicit stack), so a very deep synthetic chain cannot hit Python's recursion
limit, and all visit replies in their stored order (best rank first in exports), parents before
children.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from oasst.data.schemas import ExportMessageNode, ExportMessageTree

__all__ = [
    "count_messages",
    "iter_messages",
    "iter_threads",
    "visit_messages_depth_first",
    "visit_threads_depth_first",
]

Thread = list[ExportMessageNode]


def _root(tree_or_node: ExportMessageTree | ExportMessageNode | None) -> ExportMessageNode | None:
    if isinstance(tree_or_node, ExportMessageTree):
        return tree_or_node.prompt
    return tree_or_node


def iter_messages(tree_or_node: ExportMessageTree | ExportMessageNode | None) -> Iterator[ExportMessageNode]:
    """Yield every message of a tree (or subtree) depth-first, parents before their replies."""
    root = _root(tree_or_node)
    if root is None:
        return
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        if node.replies:
            stack.extend(reversed(node.replies))


def _iter_paths(root: ExportMessageNode | None) -> Iterator[tuple[Thread, bool]]:
    """Yield (root→node path, is_leaf) depth-first; each path is a fresh list the caller may keep."""
    if root is None:
        return
    stack: list[Thread] = [[root]]
    while stack:
        path = stack.pop()
        replies = path[-1].replies
        yield path, not replies
        if replies:
            stack.extend([*path, child] for child in reversed(replies))


def iter_threads(tree_or_node: ExportMessageTree | ExportMessageNode | None) -> Iterator[Thread]:
    """Yield every complete conversation: each root-to-leaf path, as a list from the root down."""
    for path, is_leaf in _iter_paths(_root(tree_or_node)):
        if is_leaf:
            yield path


def visit_messages_depth_first(
    node: ExportMessageNode | None,
    visitor: Callable[[ExportMessageNode], None],
    predicate: Callable[[ExportMessageNode], bool] | None = None,
) -> None:
    """Call `visitor` on each message below and including `node` for which `predicate` holds.

    The predicate only selects what is visited; it does not prune: replies of a message that fails it
    are still visited (the original behaves the same way, and filters rely on it).
    """
    for message in iter_messages(node):
        if predicate is None or predicate(message):
            visitor(message)


def visit_threads_depth_first(
    node: ExportMessageNode | None,
    visitor: Callable[[Thread], None],
    predicate: Callable[[Thread], bool] | None = None,
) -> None:
    """Call `visitor` with the root→message path of every message for which `predicate(path)` holds.

    Every prefix of a conversation is visited, not only complete ones (use `iter_threads` for those),
    because training builds an example per assistant reply. As in `visit_messages_depth_first`, the
    predicate selects and does not prune.
    """
    for path, _ in _iter_paths(node):
        if predicate is None or predicate(path):
            visitor(path)


def count_messages(tree_or_node: ExportMessageTree | ExportMessageNode | None) -> int:
    """Count the messages of a tree (or subtree), the root included; an empty tree has none."""
    return sum(1 for _ in iter_messages(tree_or_node))
