"""Converting between the two shapes of an export: nested trees and flat message rows."""

from __future__ import annotations

from collections.abc import Iterator

from oasst.data.errors import OasstDataError
from oasst.data.schemas import ExportMessageNode, ExportMessageTree
from oasst.data.traversal import iter_messages

__all__ = ["FlatTreeBuilder", "build_tree", "flatten", "take_apart"]


def flatten(
    root: ExportMessageNode | None, message_tree_id: str | None, tree_state: str | None
) -> Iterator[ExportMessageNode]:
    """Yield copies of the messages below `root` as flat rows: no replies, tree id and state set."""
    for node in iter_messages(root):
        yield node.model_copy(
            update={"replies": None, "message_tree_id": message_tree_id, "tree_state": tree_state}
        )


def take_apart(
    root: ExportMessageNode | None, message_tree_id: str | None, tree_state: str | None
) -> Iterator[ExportMessageNode]:
    """Like `flatten`, but turns the messages themselves into rows instead of copying them.

    For trees nobody else holds (the readers' own), where a copy per message would cost a fifth of
    the reading time. The tree is left without replies.
    """
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if node.replies:
            stack.extend(reversed(node.replies))
        node.replies = None
        node.message_tree_id = message_tree_id
        node.tree_state = tree_state
        yield node


def build_tree(message_tree_id: str, rows: list[ExportMessageNode]) -> ExportMessageTree:
    """Link the flat rows of one tree into an `ExportMessageTree`, replies in row order.

    The rows are modified in place (they are fresh copies from the reader). Raises `OasstDataError`
    when the rows are not one whole tree: no root or several, a duplicate id, a parent that is missing
    (a partial export such as a user's or a deleted-only one; read those with `read_messages`), or a
    cycle.
    """
    by_id: dict[str, ExportMessageNode] = {}
    children: dict[str, list[ExportMessageNode]] = {}
    roots: list[ExportMessageNode] = []
    for row in rows:
        if row.message_id in by_id:
            raise OasstDataError(f"message {row.message_id} appears twice in tree {message_tree_id}")
        by_id[row.message_id] = row
        children[row.message_id] = []
    for row in rows:
        if row.parent_id is None:
            roots.append(row)
        elif row.parent_id in children:
            children[row.parent_id].append(row)
        else:
            raise OasstDataError(
                f"the parent {row.parent_id} of message {row.message_id} is not in tree {message_tree_id}; "
                "a partial (user, spam- or deleted-only) export cannot be rebuilt into trees, read it with "
                "read_messages, or if its lines are not grouped by tree, pass grouped=False"
            )
    if len(roots) != 1:
        raise OasstDataError(f"tree {message_tree_id} has {len(roots)} root messages (parent_id null), not 1")
    root = roots[0]
    tree_state = next((row.tree_state for row in rows if row.tree_state is not None), None)
    for row in rows:
        row.replies = children[row.message_id]
        row.message_tree_id = None
        row.tree_state = None
    tree = ExportMessageTree(message_tree_id=message_tree_id, tree_state=tree_state, prompt=root)
    if sum(1 for _ in iter_messages(root)) != len(rows):
        raise OasstDataError(f"the parent links of tree {message_tree_id} form a cycle")
    return tree


class FlatTreeBuilder:
    """Collects flat rows line by line and hands back each tree once it is complete.

    Rows are keyed by `message_tree_id`; a row without one belongs to the tree it starts (a root) or to
    the tree being read (a reply), which is how depth-first flat files without tree ids are laid out.
    Grouped: a tree is complete when a row of another tree arrives, or a second root row of the same
    tree (the same tree listed twice). Not grouped: all trees stay open until `finish_open`, in the
    order they were first seen.
    """

    def __init__(self, source_name: str, *, grouped: bool = True) -> None:
        self._name = source_name
        self._grouped = grouped
        self._open: dict[str, tuple[int, list[ExportMessageNode]]] = {}
        self._current: str | None = None
        self._current_has_root = False

    def add(self, node: ExportMessageNode, lineno: int) -> Iterator[ExportMessageTree]:
        """Add the message(s) of one line; yield the trees this line proves complete."""
        for row in take_apart(node, node.message_tree_id, node.tree_state) if node.replies else (node,):
            key = row.message_tree_id or (row.message_id if row.parent_id is None else self._current)
            if key is None:
                raise OasstDataError(
                    f"message {row.message_id} has no message_tree_id and no tree precedes it",
                    path=self._name,
                    line=lineno,
                )
            # a second root under the same id starts a repeat of that tree (merged releases have them)
            if key != self._current or (row.parent_id is None and self._current_has_root):
                if self._grouped:
                    yield from self.finish_open()
                self._current, self._current_has_root = key, False
            self._current_has_root |= row.parent_id is None
            self._open.setdefault(key, (lineno, []))[1].append(row)

    def finish_open(self) -> Iterator[ExportMessageTree]:
        """Build and yield every open tree (all of them: call at the end, or when a tree line comes)."""
        while self._open:
            key = next(iter(self._open))
            first_line, rows = self._open.pop(key)
            try:
                yield build_tree(key, rows)
            except OasstDataError as exc:
                raise exc.located(self._name, first_line) from exc
        self._current = None
        self._current_has_root = False
