"""Import oasst exports (``ExportMessageTree`` or flat ``ExportMessageNode`` JSONL, plain or gzipped).

Streaming: files are read tree by tree and written in batches of whole trees (a few thousand messages),
one transaction each, with Core ``insert()`` executemany; memory stays flat however big the file.

* A **validation pass** reads each file once first: a bad line (invalid JSON, a wrong field, an unknown
  tree state) stops the import before anything is written, naming the file and line (or tree). A later
  database error rolls back its own batch of whole trees: no tree is ever half imported.
* **Idempotent**: a tree whose root message exists is skipped (not updated) and counted as skipped. A new
  tree with a message id that exists elsewhere is a conflict and stops the import.
* **Ownership**: one API client owns everything (the original's fixed id; "oasst import", untrusted),
  with a ``system`` user per exported ``user_id`` (``username`` = that id; row id = that id if it is a
  UUID). Label rows, and events without a user, belong to its "oasst import" user.
* **Ids that are not UUIDs** (anonymised exports) map to uuid5 values; the original is kept in
  ``extra[IDS_KEY]`` (or the user's ``username``) and written back by the export.
* **Unknown fields** (``CRITERIA``, ``detoxify``, newer ones) go to ``Message.extra`` and
  ``MessageTreeState.extra``; events without a table of their own to ``extra[EVENTS_KEY]``.
* **Labels** ``{name: {value, count}}`` become ``max(count)`` TextLabels rows (``text="imported"``, no
  task) where label *k* has value *v_k* in the first *count_k* rows, so the export's averages and counts
  come back equal; without a task they never count as reviews. Emoji events become ``MessageEmoji`` rows,
  ranking events ``MessageReaction`` rows on the parent (and ``ranking_count`` of the ranked replies).
"""

from __future__ import annotations

import gc
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from oasst.backend.db import Database
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import (
    TERMINAL_STATES,
    ApiClient,
    Base,
    Message,
    MessageEmoji,
    MessageReaction,
    MessageTreeState,
    TextLabels,
    TreeState,
    User,
    utcnow,
)
from oasst.backend.services.clients import hash_api_key
from oasst.backend.settings import TreeManagerConfiguration
from oasst.data import (
    ExportMessageEventEmoji,
    ExportMessageEventRanking,
    ExportMessageNode,
    ExportMessageTree,
    OasstDataError,
    iter_messages,
    read_message_trees,
)

# The original's fixed import client id, so data imported by either has one owner.
IMPORT_CLIENT_ID = uuid.UUID("bd8fde8b-1d8e-4e9a-9966-e96d000f8363")
IMPORT_CLIENT_DESCRIPTION = "oasst import"
IMPORT_USERNAME = "oasst import"  # a space keeps it apart from any exported user id
IMPORTED_LABEL_TEXT = "imported"
IDS_KEY = "_oasst_ids"  # in ``extra``: the exported ids that are not the row's UUID
EVENTS_KEY = "_oasst_events"  # in ``Message.extra``: events with no table of their own
RANKING_PAYLOAD = "RankingReactionPayload"
_ID_NAMESPACE = uuid.UUID("5f0c3a52-8f0e-4e4c-9a57-0a55a7c0e7a1")
_AFTER_LOTTERY = {TreeState.GROWING, TreeState.RANKING, TreeState.READY_FOR_SCORING}
_AFTER_LOTTERY |= {TreeState.READY_FOR_EXPORT, TreeState.SCORING_FAILED}
# Column widths the exported strings must fit (PostgreSQL enforces them).
_LIMITS = {"message id": 200, "user id": 128, "lang": 32, "model_name": 1024, "emoji": 128, "origin": 1024}
_ANALYZED = ("message", "message_tree_state", "text_labels", "message_emoji", "message_reaction", '"user"')
_USER = {
    "auth_method": "system",
    "enabled": True,
    "deleted": False,
    "notes": "",
    "show_on_leaderboard": False,
}


def exported_to_uuid(exported_id: str, collection: str) -> uuid.UUID:
    """The row id of an exported id: the id itself when it is a UUID, else a uuid5 of it."""
    try:
        return uuid.UUID(exported_id)
    except ValueError:
        return uuid.uuid5(_ID_NAMESPACE, f"{collection}:{exported_id}")


@dataclass(frozen=True)
class ImportOptions:
    """What to import and how; the defaults are the CLI's."""

    origin: str | None = None  # None: the tree's own ``origin``, else the file's name
    state: TreeState | None = None  # every tree's state (e.g. backlog_ranking for model output)
    synthetic: bool = False  # mark every assistant message synthetic (model output)
    model_name: str | None = None  # set on every synthetic message
    batch_messages: int = 2000  # messages per transaction (whole trees, so a batch may be larger)
    validate: bool = True  # read each file once before writing anything
    grouped: bool = True  # flat files: the lines of a tree are contiguous (see read_message_trees)


@dataclass
class ImportSummary:
    files: int = 0
    trees: int = 0
    skipped: int = 0  # trees whose root already existed
    messages: int = 0
    seconds: float = 0.0

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ImportProgress:
    path: str
    phase: str  # "validating" or "importing"
    trees: int
    skipped: int
    messages: int


ProgressCallback = Callable[[ImportProgress], None]


@dataclass
class _Batch:
    """One transaction's worth: what the rows need to know, and the rows in insert order."""

    client_id: uuid.UUID
    users: dict[str, uuid.UUID]  # exported user id -> row id; IMPORT_USERNAME -> the import user
    cfg: TreeManagerConfiguration
    options: ImportOptions
    file_name: str
    now: Any = field(default_factory=utcnow)
    messages: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    emojis: list[dict[str, Any]] = field(default_factory=list)
    reactions: list[dict[str, Any]] = field(default_factory=list)

    def tick(self) -> Any:
        """Strictly increasing timestamps, so events keep their file order when sorted by date."""
        self.now += timedelta(microseconds=1)
        return self.now


def import_files(
    database: Database,
    paths: Sequence[str | os.PathLike[str]],
    *,
    cfg: TreeManagerConfiguration,
    options: ImportOptions | None = None,
    on_progress: ProgressCallback | None = None,
) -> ImportSummary:
    """Import every file in turn; raises ``OasstError(IMPORT_INVALID_FILE)`` naming the file and line."""
    options = options or ImportOptions()
    summary = ImportSummary()
    started = time.perf_counter()
    gc.freeze()  # as in the export: full collections need not walk the libraries' objects each time
    try:
        if options.validate:
            for path in paths:
                validate_file(path, options, on_progress=on_progress)
        owner = database.write(ensure_import_owner)
        for path in paths:
            _import_file(database, os.fspath(path), cfg, options, owner, summary, on_progress)
            summary.files += 1
        if summary.messages and database.engine.dialect.name == "postgresql":
            # fresh statistics: with the planner's guesses from before a big import, exports crawl
            database.write(lambda s: s.execute(text(f"ANALYZE {', '.join(_ANALYZED)}")))
    finally:
        gc.unfreeze()
    summary.seconds = time.perf_counter() - started
    return summary


def _invalid(message: object, path: str | None = None) -> OasstError:
    where = "" if path is None else f"{path}: "
    return OasstError(f"Cannot import: {where}{message}", ErrorCode.IMPORT_INVALID_FILE)


def _read_trees(path: str, options: ImportOptions) -> Iterator[tuple[int, ExportMessageTree]]:
    """The trees of a file with their ordinal; reading errors (with file and line) become OasstErrors."""
    trees = read_message_trees(path, grouped=options.grouped)
    ordinal = 0
    while True:
        try:
            tree = next(trees)
        except StopIteration:
            return
        except OasstDataError as exc:
            raise _invalid(exc) from exc
        ordinal += 1
        yield ordinal, tree


def validate_file(
    path: str | os.PathLike[str], options: ImportOptions, *, on_progress: ProgressCallback | None = None
) -> tuple[int, int]:
    """Read a file once and check every tree; return (trees, messages). Nothing is written."""
    name = os.fspath(path)
    trees = messages = 0
    for ordinal, tree in _read_trees(name, options):
        problem = check_tree(tree, options)
        if problem is not None:
            raise _invalid(f"tree {ordinal} ({tree.message_tree_id}): {problem}", name)
        trees += 1
        messages += sum(1 for _ in iter_messages(tree))
        if on_progress is not None and trees % 500 == 0:
            on_progress(ImportProgress(name, "validating", trees, 0, messages))
    return trees, messages


def check_tree(tree: ExportMessageTree, options: ImportOptions) -> str | None:
    """Why this tree cannot be imported, or None if it can."""
    if tree.prompt is None:
        return "the tree has no prompt"
    if tree.prompt.parent_id is not None:
        return f"the prompt {tree.prompt.message_id} has a parent_id; only whole trees can be imported"
    if options.state is None and tree.tree_state is not None:
        try:
            TreeState(tree.tree_state)
        except ValueError:
            known = ", ".join(s.value for s in TreeState)
            return f"unknown tree_state {tree.tree_state!r} (known: {known})"
    if len(options.origin or tree.origin or "") > _LIMITS["origin"]:
        return "origin is too long"
    seen: set[uuid.UUID] = set()
    for node in iter_messages(tree):
        if (problem := _check_node(node)) is not None:
            return f"message {node.message_id[:80]}: {problem}"
        if exported_to_uuid(node.message_id, "message") in seen:
            return f"message {node.message_id[:80]} appears twice"
        seen.add(exported_to_uuid(node.message_id, "message"))
        if any(reply.parent_id not in (None, node.message_id) for reply in node.replies or ()):
            return f"a reply of message {node.message_id[:80]} names another parent_id"
    return None


def _check_node(node: ExportMessageNode) -> str | None:
    values: dict[str, list[str | None]] = {"message id": [node.message_id], "lang": [node.lang]}
    values |= {"model_name": [node.model_name], "user id": [node.user_id], "emoji": list(node.emojis or {})}
    for events in (node.events or {}).values():
        for event in events:
            values["user id"].append(event.user_id)
            if isinstance(event, ExportMessageEventEmoji):
                values["emoji"].append(event.emoji)
    for what, items in values.items():
        if any(item is not None and len(item) > _LIMITS[what] for item in items):
            return f"{what} longer than {_LIMITS[what]} characters"
    return None


def ensure_import_owner(session: Session) -> uuid.UUID:
    """Create the import API client and its "oasst import" user on first use; return that user's id."""
    if session.get(ApiClient, IMPORT_CLIENT_ID) is None:
        key_hash = hash_api_key(uuid.uuid4().hex + uuid.uuid4().hex)  # a key nobody knows: it owns data only
        client = {"id": IMPORT_CLIENT_ID, "api_key_hash": key_hash, "description": IMPORT_CLIENT_DESCRIPTION}
        client |= {"enabled": True, "trusted": False, "frontend_type": "import", "created_date": utcnow()}
        session.execute(insert(ApiClient).values(client))
    return _resolve_users(session, {IMPORT_USERNAME}, display_name="oasst import")[IMPORT_USERNAME]


def _resolve_users(
    session: Session, names: set[str], *, display_name: str = "imported user"
) -> dict[str, uuid.UUID]:
    """Map exported user ids to user rows of the import client, creating the missing ones."""
    if not names:
        return {}
    mine = select(User.username, User.id).where(
        User.api_client_id == IMPORT_CLIENT_ID, User.auth_method == "system"
    )
    found = {username: user_id for username, user_id in session.execute(mine.where(User.username.in_(names)))}
    wanted = {name: exported_to_uuid(name, "user") for name in names - found.keys()}
    taken = set(session.scalars(select(User.id).where(User.id.in_(list(wanted.values())))))
    rows = []
    for name, user_id in wanted.items():
        if user_id in taken:  # the id is a user of another client's: use a derived one
            user_id = uuid.uuid5(_ID_NAMESPACE, f"imported-user:{name}")
        found[name] = user_id
        row = {"id": user_id, "username": name, "display_name": display_name}
        rows.append({**_USER, **row, "api_client_id": IMPORT_CLIENT_ID, "created_date": utcnow()})
    _insert(session, User, rows)
    return found


def _insert(session: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Core executemany on the table: no ORM bookkeeping per row."""
    if rows:
        session.connection().execute(insert(cast(Table, model.__table__)), rows)


def _batches(trees: Iterable[tuple[int, ExportMessageTree]], size: int) -> Iterator[list[ExportMessageTree]]:
    batch: list[ExportMessageTree] = []
    count = 0
    for _, tree in trees:
        batch.append(tree)
        count += sum(1 for _ in iter_messages(tree))
        if count >= size:
            yield batch
            batch, count = [], 0
    if batch:
        yield batch


def _import_file(
    database: Database,
    path: str,
    cfg: TreeManagerConfiguration,
    options: ImportOptions,
    import_user: uuid.UUID,
    summary: ImportSummary,
    on_progress: ProgressCallback | None,
) -> None:
    for trees in _batches(_read_trees(path, options), options.batch_messages):
        for tree in trees if not options.validate else ():
            if (problem := check_tree(tree, options)) is not None:
                raise _invalid(f"tree {tree.message_tree_id}: {problem}", path)

        def work(session: Session, trees: list[ExportMessageTree] = trees) -> tuple[int, int, int]:
            users = {IMPORT_USERNAME: import_user}
            batch = _Batch(IMPORT_CLIENT_ID, users, cfg, options, os.path.basename(path))
            return _import_batch(session, trees, batch, path)

        try:
            imported, skipped, messages = database.write(work)
        except IntegrityError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise _invalid(f"a batch of trees could not be stored ({reason})", path) from exc
        summary.trees += imported
        summary.skipped += skipped
        summary.messages += messages
        if on_progress is not None:
            on_progress(ImportProgress(path, "importing", summary.trees, summary.skipped, summary.messages))


def _import_batch(
    session: Session, trees: list[ExportMessageTree], batch: _Batch, path: str
) -> tuple[int, int, int]:
    """Insert the new trees of one batch; return (trees imported, trees skipped, messages imported)."""
    fresh = _new_trees(session, trees, path)
    batch.users |= _resolve_users(session, {name for tree in fresh for name in _user_names(tree)})
    for tree in fresh:
        _tree_rows(tree, batch)
    for model, rows in (
        (Message, batch.messages),
        (MessageTreeState, batch.states),
        (TextLabels, batch.labels),
        (MessageEmoji, batch.emojis),
        (MessageReaction, batch.reactions),
    ):
        _insert(session, model, rows)
    return len(fresh), len(trees) - len(fresh), len(batch.messages)


def _new_trees(session: Session, trees: list[ExportMessageTree], path: str) -> list[ExportMessageTree]:
    """The trees whose root is neither in the database nor earlier in the batch."""
    ids_of = {id(t): [exported_to_uuid(n.message_id, "message") for n in iter_messages(t)] for t in trees}
    all_ids = [i for ids in ids_of.values() for i in ids]
    existing: set[uuid.UUID] = set()
    for start in range(0, len(all_ids), 5000):
        chunk = all_ids[start : start + 5000]
        existing.update(session.scalars(select(Message.id).where(Message.id.in_(chunk))))
    fresh = []
    for tree in trees:
        ids = ids_of[id(tree)]
        if ids[0] in existing:
            continue
        if (clash := next((i for i in ids if i in existing), None)) is not None:
            message = f"message {clash} of tree {tree.message_tree_id} already exists in another tree"
            raise _invalid(message, path)
        existing.update(ids)  # a second copy of the tree later in the batch is skipped
        fresh.append(tree)
    return fresh


def _user_names(tree: ExportMessageTree) -> Iterator[str]:
    for node in iter_messages(tree):
        if node.user_id is not None:
            yield node.user_id
        for events in (node.events or {}).values():
            yield from (event.user_id for event in events if event.user_id is not None)


def _tree_rows(tree: ExportMessageTree, batch: _Batch) -> None:
    """Append the rows of one tree: its messages (parents first), state, labels and events."""
    assert tree.prompt is not None  # check_tree
    root_id = exported_to_uuid(tree.prompt.message_id, "message")
    nodes = list(iter_messages(tree))
    ranked = _ranking_counts(nodes)
    # the nesting decides parents and depths (check_tree made sure any parent_id agrees with it)
    stack: list[tuple[ExportMessageNode, uuid.UUID | None, int]] = [(tree.prompt, None, 0)]
    while stack:
        node, parent_id, depth = stack.pop()
        message_id = exported_to_uuid(node.message_id, "message")
        stack.extend((reply, message_id, depth + 1) for reply in reversed(node.replies or ()))
        row = _message_row(node, message_id, parent_id, root_id, batch)
        row["depth"], row["ranking_count"] = depth, ranked[node.message_id]
        row["children_count"] = sum(1 for child in node.replies or () if not child.deleted)
        batch.messages.append(row)
        _label_rows(node, message_id, batch)
        _event_rows(node, message_id, root_id, batch)
    batch.states.append(_state_row(tree, root_id, len(nodes), batch))


def _ranking_counts(nodes: list[ExportMessageNode]) -> dict[str, int]:
    counts = {node.message_id: 0 for node in nodes}
    for node in nodes:
        for event in (node.events or {}).get("ranking", ()):
            if isinstance(event, ExportMessageEventRanking):
                for ranked_id in event.ranked_message_ids:
                    if ranked_id in counts:
                        counts[ranked_id] += 1
    return counts


def _message_row(
    node: ExportMessageNode,
    message_id: uuid.UUID,
    parent_id: uuid.UUID | None,
    root_id: uuid.UUID,
    batch: _Batch,
) -> dict[str, Any]:
    options = batch.options
    synthetic = bool(node.synthetic) or (options.synthetic and node.role == "assistant")
    model_name = options.model_name if synthetic and options.model_name else node.model_name
    return {
        "id": message_id,
        "parent_id": parent_id,
        "message_tree_id": root_id,
        "task_id": None,
        "user_id": None if node.user_id is None else batch.users[node.user_id],
        "role": node.role,
        "api_client_id": batch.client_id,
        "frontend_message_id": node.message_id,
        "created_date": node.created_date or batch.tick(),
        "text": node.text,
        "lang": node.lang or "en",
        "deleted": bool(node.deleted),
        "review_count": node.review_count or 0,
        "review_result": node.review_result,
        "rank": node.rank,
        "synthetic": synthetic,
        "edited": False,
        "model_name": model_name,
        "emojis": node.emojis,
        "extra": _message_extra(node, message_id) or None,
    }


def _message_extra(node: ExportMessageNode, message_id: uuid.UUID) -> dict[str, Any]:
    extra = dict(node.model_extra or {})
    if node.detoxify is not None:  # a format field oasst does not model
        extra["detoxify"] = node.detoxify.model_dump(mode="json")
    if str(message_id) != node.message_id:
        extra[IDS_KEY] = {"message_id": node.message_id}
    kept: dict[str, list[Any]] = {}
    for kind, events in (node.events or {}).items():
        for event in events:
            if not isinstance(event, ExportMessageEventEmoji | ExportMessageEventRanking):
                kept.setdefault(kind, []).append(event.model_dump(mode="json"))
    if kept:
        extra[EVENTS_KEY] = kept
    return extra


def _label_rows(node: ExportMessageNode, message_id: uuid.UUID, batch: _Batch) -> None:
    labels = {name: avg for name, avg in (node.labels or {}).items() if avg.count > 0}
    for i in range(max((avg.count for avg in labels.values()), default=0)):
        row = {"id": uuid.uuid4(), "user_id": batch.users[IMPORT_USERNAME], "created_date": batch.tick()}
        row |= {"api_client_id": batch.client_id, "text": IMPORTED_LABEL_TEXT, "message_id": message_id}
        row["labels"] = {name: avg.value for name, avg in labels.items() if i < avg.count}
        batch.labels.append({**row, "task_id": None, "is_report": False})


def _event_rows(node: ExportMessageNode, message_id: uuid.UUID, root_id: uuid.UUID, batch: _Batch) -> None:
    seen: set[tuple[uuid.UUID, str]] = set()
    for events in (node.events or {}).values():
        for event in events:
            user_id = batch.users[event.user_id if event.user_id is not None else IMPORT_USERNAME]
            if isinstance(event, ExportMessageEventEmoji) and (user_id, event.emoji) not in seen:
                seen.add((user_id, event.emoji))
                emoji = {"message_id": message_id, "user_id": user_id, "emoji": event.emoji}
                batch.emojis.append({**emoji, "created_date": batch.tick()})
            elif isinstance(event, ExportMessageEventRanking):
                row = {"task_id": uuid.uuid4(), "user_id": user_id, "created_date": batch.tick()}
                row |= {"payload_type": RANKING_PAYLOAD, "payload": _ranking_payload(event, root_id)}
                batch.reactions.append({**row, "api_client_id": batch.client_id, "message_id": message_id})


def _ranking_payload(event: ExportMessageEventRanking, root_id: uuid.UUID) -> dict[str, Any]:
    """The payload the backend stores for a ballot (see ``interactions.handle_ranking``)."""
    parent = event.ranking_parent_id
    return {
        "type": "message_ranking",
        "ranking": list(event.ranking),
        "ranked_message_ids": [str(exported_to_uuid(i, "message")) for i in event.ranked_message_ids],
        "ranking_parent_id": None if parent is None else str(exported_to_uuid(parent, "message")),
        "message_tree_id": None if event.message_tree_id is None else str(root_id),
        "not_rankable": event.not_rankable,
    }


def _state_row(tree: ExportMessageTree, root_id: uuid.UUID, size: int, batch: _Batch) -> dict[str, Any]:
    assert tree.prompt is not None
    options, cfg = batch.options, batch.cfg
    if options.state is not None:
        state = options.state
    elif tree.tree_state is not None:
        state = TreeState(tree.tree_state)
    else:  # like the startup repair of trees without a state row
        state = TreeState.GROWING if size > 1 else TreeState.INITIAL_PROMPT_REVIEW
    goal = cfg.goal_tree_size  # the config snapshot a new tree takes (tree_manager.create_tree_state)
    if cfg.random_goal_tree_size and cfg.min_goal_tree_size < cfg.goal_tree_size:
        goal = random.randint(cfg.min_goal_tree_size, cfg.goal_tree_size)
    extra = dict(tree.model_extra or {})
    if tree.message_tree_id != tree.prompt.message_id:
        extra[IDS_KEY] = {"message_tree_id": tree.message_tree_id}
    now = batch.tick()
    return {
        "message_tree_id": root_id,
        "goal_tree_size": goal,
        "max_depth": cfg.max_tree_depth,
        "max_children_count": cfg.max_children_count,
        "state": state.value,
        "active": state not in TERMINAL_STATES,
        "origin": options.origin or tree.origin or batch.file_name,
        "won_prompt_lottery_date": now if state in _AFTER_LOTTERY else None,
        "lang": tree.prompt.lang or "en",
        "created_date": now,
        "extra": extra or None,
    }
