"""Export message trees as oasst JSONL (the public oasst1/oasst2 format), streaming.

Trees are read in keyset-paginated batches of ``batch_trees`` (by ``message_tree_id``), each with a fixed
number of queries whatever its size: the page of tree states, their messages and, as asked, their text
labels, emojis and ranking reactions (plus the original ids of imported users, if any). Labels are
averaged in Python; each batch is built, written and dropped, in its own short transaction, so memory
stays flat and a long export holds no lock or snapshot.

On purpose unlike the original: ``review_result`` is written as stored (the original blanked it unless
accepted or reviewed more than twice, so a rejected reply came back as pending after an import: round
trips must be exact); ``origin`` is filled; what the importer kept (unknown fields, events without a
table, original ids) is written back; replies are ordered by rank (NULL last), then creation date.

Filters: trees by state, language (the prompt's) and, unless synthetic messages are included, having none.
In tree exports a message that fails the deleted/spam filters is left out with its subtree; the prompt
must also pass the date range. A user's messages and the deleted-, spam- or synthetic-only selections are
incomplete trees, written as flat ``ExportMessageNode`` rows (by tree, parents first), each message judged
on its own.
"""

from __future__ import annotations

import gc
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from typing import cast as typing_cast

from sqlalchemy import ColumnElement, Connection, Text, and_, cast, exists, select

from oasst.backend.db import Database
from oasst.backend.models import Base
from oasst.backend.services.importer import (
    EVENTS_KEY,
    IDS_KEY,
    IMPORT_CLIENT_ID,
    IMPORT_USERNAME,
    RANKING_PAYLOAD,
)
from oasst.data import (
    Anonymizer,
    ExportMessageNode,
    ExportMessageTree,
    Target,
    write_message_trees,
    write_messages,
)

DEFAULT_STATE = "ready_for_export"
Deleted = Literal["exclude", "include", "only"]
Spam = Literal["accepted", "include", "only"]
Synthetic = Literal["exclude", "include", "only"]

_TABLES = Base.metadata.tables
_M, _S, _L = _TABLES["message"], _TABLES["message_tree_state"], _TABLES["text_labels"]
_E, _R, _U = _TABLES["message_emoji"], _TABLES["message_reaction"], _TABLES["user"]
# Message rows are tuples: these node fields (``id`` is ``message_id``), then extra and message_tree_id.
_FIELDS: tuple[str, ...] = (
    "message_id",
    "parent_id",
    "user_id",
    "created_date",
    "text",
    "role",
    "lang",
    "review_count",
)
_FIELDS += ("review_result", "deleted", "rank", "synthetic", "model_name", "emojis")
_COLUMNS = [_M.c.id, *(_M.c[name] for name in _FIELDS[1:]), _M.c.extra, _M.c.message_tree_id]
_ID, _PARENT, _USER, _CREATED = range(4)
_REVIEW_RESULT, _DELETED, _RANK, _SYNTHETIC = (
    _FIELDS.index(f) for f in ("review_result", "deleted", "rank", "synthetic")
)
_EXTRA, _TREE = len(_FIELDS), len(_FIELDS) + 1
_RESERVED = {IDS_KEY, EVENTS_KEY}
_KNOWN_FIELDS = set(ExportMessageNode.model_fields)


@dataclass(frozen=True)
class ExportOptions:
    """What to export; the defaults are the original's (finished, accepted, human-only trees)."""

    states: tuple[str, ...] | None = None  # None: ready_for_export for trees, all states for flat rows
    langs: tuple[str, ...] = ()
    deleted: Deleted = "exclude"
    spam: Spam = "accepted"  # accepted: review_result true; only: review_result false
    synthetic: Synthetic = "exclude"  # exclude: skip trees that contain any synthetic message
    user_id: uuid.UUID | None = None  # one user's messages, as flat rows
    from_date: datetime | None = None  # created_date >= from_date (the prompt's, in tree exports)
    to_date: datetime | None = None  # created_date < to_date
    prompts_only: bool = False
    limit: int | None = None  # trees (tree exports) or messages (flat exports)
    labels: bool = False
    events: bool = False
    anonymizer_seed: int | str | None = None
    batch_trees: int = 50

    @property
    def flat(self) -> bool:
        """Whether the selection makes incomplete trees, written as flat message rows."""
        return self.user_id is not None or "only" in (self.deleted, self.spam, self.synthetic)

    @property
    def state_filter(self) -> tuple[str, ...]:
        """The states to select; empty for all."""
        states = self.states if self.states is not None else (() if self.flat else (DEFAULT_STATE,))
        return () if "all" in states else states


@dataclass
class ExportSummary:
    trees: int = 0
    messages: int = 0
    seconds: float = 0.0

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def export_to(
    database: Database,
    target: Target,
    options: ExportOptions | None = None,
    *,
    on_progress: Callable[[ExportSummary], None] | None = None,
) -> ExportSummary:
    """Write the export to a path (``.gz`` compresses), ``"-"`` (stdout) or an open file."""
    options = options or ExportOptions()
    summary = ExportSummary()
    started = time.perf_counter()
    items = iter_export(database, options, summary, on_progress=on_progress)
    # Batches live long enough to reach the oldest GC generation, so full collections run often; without
    # freezing, each one walks every object of SQLAlchemy, pydantic and the rest (export ~15% slower).
    gc.freeze()
    try:
        if options.flat:
            write_messages(target, typing_cast(Iterator[ExportMessageNode], items))
        else:
            write_message_trees(target, typing_cast(Iterator[ExportMessageTree], items))
    finally:
        gc.unfreeze()
    summary.seconds = time.perf_counter() - started
    return summary


def iter_export(
    database: Database,
    options: ExportOptions,
    summary: ExportSummary | None = None,
    *,
    on_progress: Callable[[ExportSummary], None] | None = None,
) -> Iterator[ExportMessageTree | ExportMessageNode]:
    """Yield the trees (or, for flat selections, the messages) of the export one at a time."""
    summary = summary if summary is not None else ExportSummary()
    anonymizer = None if options.anonymizer_seed is None else Anonymizer(options.anonymizer_seed)
    with database.engine.connect() as conn:
        clients = _TABLES["api_client"]
        imported = conn.execute(select(clients.c.id).where(clients.c.id == IMPORT_CLIENT_ID)).first()

    def produce(after: uuid.UUID | None) -> tuple[uuid.UUID, list[tuple[Any, int]]] | None:
        """Read and build the batch of trees after ``after``: (its last tree id, [(item, messages)])."""
        with database.engine.connect() as conn:
            page = _tree_page(conn, options, after)
            if not page:
                return None
            batch = _fetch_batch(conn, page, options, imported is not None)
        items = list(_build(batch, options))
        if anonymizer is not None:
            items = [(_anonymize(anonymizer, item), n) for item, n in items]
        return page[-1].tree_id, items

    # The next batch is read and built in a thread while the caller writes this one, so the database's
    # work, the driver's waits and the writer's compression (which releases the GIL) can overlap. At most
    # two batches are in memory.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="oasst-export") as producer:
        pending = producer.submit(produce, None)
        while (done := pending.result()) is not None:
            pending = producer.submit(produce, done[0])
            for item, messages in done[1]:
                summary.messages += messages
                summary.trees += not options.flat
                yield item
                if options.limit is not None and _emitted(summary, options) >= options.limit:
                    return
            if on_progress is not None:
                on_progress(summary)


def find_user_id(database: Database, exported_id: str) -> uuid.UUID | None:
    """The user behind a ``user_id`` as exports write it: an imported user's original id, or a UUID."""
    with database.engine.connect() as conn:
        imported = select(_U.c.id).where(_U.c.api_client_id == IMPORT_CLIENT_ID, _U.c.username == exported_id)
        found = conn.execute(imported).scalar()
        if found is None and (as_uuid := _as_uuid(exported_id)) is not None:
            found = conn.execute(select(_U.c.id).where(_U.c.id == as_uuid)).scalar()
    return found


def _emitted(summary: ExportSummary, options: ExportOptions) -> int:
    return summary.messages if options.flat else summary.trees


def _anonymize(anonymizer: Anonymizer, item: ExportMessageTree | ExportMessageNode) -> Any:
    if isinstance(item, ExportMessageTree):
        return anonymizer.anonymize_tree(item)
    return anonymizer.anonymize_message(item)


# ---------------------------------------------------------------------------------------------------
# queries


@dataclass(frozen=True)
class _TreeInfo:
    tree_id: uuid.UUID
    state: str
    origin: str | None
    extra: dict[str, Any] | None


@dataclass
class _Batch:
    trees: list[_TreeInfo]
    messages: dict[uuid.UUID, list[tuple[Any, ...]]] = field(default_factory=dict)  # by tree
    labels: dict[uuid.UUID, dict[str, list[float]]] = field(default_factory=dict)  # by message
    emojis: dict[uuid.UUID, list[tuple[uuid.UUID, str]]] = field(default_factory=dict)
    rankings: dict[uuid.UUID, list[tuple[uuid.UUID, dict[str, Any]]]] = field(default_factory=dict)
    users: dict[uuid.UUID, str | None] = field(default_factory=dict)  # exported ids unlike str(uuid)


def _sql_filters(options: ExportOptions, *, flat: bool) -> list[ColumnElement[bool]]:
    """The message filters in SQL: for the prompt of tree exports, for any message of flat ones."""
    where: list[ColumnElement[bool]] = []
    if options.deleted != "include":
        where.append(_M.c.deleted.is_(options.deleted == "only"))
    if options.spam != "include":
        where.append(_M.c.review_result.is_(options.spam == "accepted"))
    if options.from_date is not None:
        where.append(_M.c.created_date >= options.from_date)
    if options.to_date is not None:
        where.append(_M.c.created_date < options.to_date)
    if flat and options.synthetic == "only":
        where.append(_M.c.synthetic.is_(True))
    if flat and options.user_id is not None:
        where.append(_M.c.user_id == options.user_id)
    if flat and options.prompts_only:
        where.append(_M.c.parent_id.is_(None))
    return where


def _tree_page(conn: Connection, options: ExportOptions, after: uuid.UUID | None) -> list[_TreeInfo]:
    stmt = select(_S.c.message_tree_id, _S.c.state, _S.c.origin, _S.c.extra)
    if after is not None:
        stmt = stmt.where(_S.c.message_tree_id > after)
    if options.state_filter:
        stmt = stmt.where(_S.c.state.in_(options.state_filter))
    if options.langs:
        stmt = stmt.where(_S.c.lang.in_(options.langs))
    if options.synthetic == "exclude":
        other = _M.alias("any_message")  # the prompt is joined as _M below; this is another message
        synthetic = exists().where(
            other.c.message_tree_id == _S.c.message_tree_id, other.c.synthetic.is_(True)
        )
        stmt = stmt.where(~synthetic)
    if options.flat:
        matching = [_M.c.message_tree_id == _S.c.message_tree_id, *_sql_filters(options, flat=True)]
        stmt = stmt.where(exists().where(and_(*matching)))
    else:
        stmt = stmt.join(_M, _M.c.id == _S.c.message_tree_id).where(*_sql_filters(options, flat=False))
    stmt = stmt.order_by(_S.c.message_tree_id).limit(options.batch_trees)
    return [_TreeInfo(*row) for row in conn.execute(stmt).all()]


def _fetch_batch(conn: Connection, page: list[_TreeInfo], options: ExportOptions, imported: bool) -> _Batch:
    batch = _Batch(trees=page)
    tree_ids = [tree.tree_id for tree in page]
    in_batch = _M.c.message_tree_id.in_(tree_ids)
    stmt = select(*_COLUMNS).where(in_batch)
    if options.prompts_only:
        stmt = stmt.where(_M.c.parent_id.is_(None))
    user_ids: set[uuid.UUID] = set()
    for row in conn.execute(stmt).all():
        batch.messages.setdefault(row[_TREE], []).append(tuple(row))
        if row[_USER] is not None:
            user_ids.add(row[_USER])
    if options.labels:
        _fetch_labels(conn, batch, in_batch)
    if options.events:
        _fetch_events(conn, batch, in_batch, user_ids)
    if imported and user_ids:
        batch.users = _imported_user_ids(conn, user_ids)
    return batch


def _fetch_labels(conn: Connection, batch: _Batch, in_batch: ColumnElement[bool]) -> None:
    # as text, parsed here: psycopg would parse JSONB from bytes, which is slower
    stmt = (
        select(_L.c.message_id, cast(_L.c.labels, Text)).join(_M, _M.c.id == _L.c.message_id).where(in_batch)
    )
    labels = batch.labels
    for message_id, raw in conn.execute(stmt).all():
        acc = labels.get(message_id)
        if acc is None:
            acc = labels[message_id] = {}
        for name, value in (json.loads(raw) if raw else {}).items():
            values = acc.get(name)
            if values is None:
                acc[name] = [value]
            else:
                values.append(value)


def _fetch_events(
    conn: Connection, batch: _Batch, in_batch: ColumnElement[bool], user_ids: set[uuid.UUID]
) -> None:
    emojis = (
        select(_E.c.message_id, _E.c.user_id, _E.c.emoji)
        .join(_M, _M.c.id == _E.c.message_id)
        .where(in_batch)
        .order_by(_E.c.created_date, _E.c.user_id, _E.c.emoji)
    )
    for message_id, user_id, emoji in conn.execute(emojis).all():
        batch.emojis.setdefault(message_id, []).append((user_id, emoji))
        user_ids.add(user_id)
    rankings = (
        select(_R.c.message_id, _R.c.user_id, _R.c.payload)
        .join(_M, _M.c.id == _R.c.message_id)
        .where(in_batch, _R.c.payload_type == RANKING_PAYLOAD)
        .order_by(_R.c.created_date, _R.c.task_id)
    )
    for message_id, user_id, payload in conn.execute(rankings).all():
        batch.rankings.setdefault(message_id, []).append((user_id, payload or {}))
        user_ids.add(user_id)


def _imported_user_ids(conn: Connection, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """Imported users are exported under their original id (their username); the import user as null."""
    stmt = select(_U.c.id, _U.c.username).where(_U.c.api_client_id == IMPORT_CLIENT_ID, _U.c.id.in_(user_ids))
    found: dict[uuid.UUID, str | None] = {}
    for user_id, username in conn.execute(stmt):
        if username == IMPORT_USERNAME:
            found[user_id] = None
        elif username != str(user_id):
            found[user_id] = username
    return found


# ---------------------------------------------------------------------------------------------------
# building trees and rows


class _Ids:
    """Exported ids of one batch: the original ids of imported rows, else the UUID as a string."""

    def __init__(self, batch: _Batch) -> None:
        self.users = batch.users
        self.messages: dict[uuid.UUID, str] = {}
        for rows in batch.messages.values():
            for row in rows:
                original = ((row[_EXTRA] or {}).get(IDS_KEY) or {}).get("message_id")
                if original is not None:
                    self.messages[row[_ID]] = original
        self.trees: dict[uuid.UUID, str] = {}
        for info in batch.trees:
            original = ((info.extra or {}).get(IDS_KEY) or {}).get("message_tree_id")
            self.trees[info.tree_id] = original or self.message(info.tree_id)

    def message(self, message_id: uuid.UUID | str) -> str:
        key = message_id if isinstance(message_id, uuid.UUID) else _as_uuid(message_id)
        return self.messages.get(key, str(message_id)) if key is not None else str(message_id)

    def maybe_message(self, message_id: uuid.UUID | str | None) -> str | None:
        return None if message_id is None else self.message(message_id)

    def tree(self, tree_id: str | None) -> str | None:
        key = None if tree_id is None else _as_uuid(tree_id)
        return self.trees[key] if key in self.trees else self.maybe_message(tree_id)

    def user(self, user_id: uuid.UUID | None) -> str | None:
        if user_id is None:
            return None
        return self.users[user_id] if user_id in self.users else str(user_id)


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _keep(row: tuple[Any, ...], options: ExportOptions) -> bool:
    """The message filters in Python, for each message of the batch (mirrors ``_sql_filters``)."""
    if options.deleted != "include" and bool(row[_DELETED]) != (options.deleted == "only"):
        return False
    if options.spam != "include" and row[_REVIEW_RESULT] is not (options.spam == "accepted"):
        return False
    if options.prompts_only and row[_PARENT] is not None:
        return False
    if not options.flat:
        return True
    if options.synthetic == "only" and not row[_SYNTHETIC]:
        return False
    if options.user_id is not None and row[_USER] != options.user_id:
        return False
    if options.from_date is not None and row[_CREATED] < options.from_date:
        return False
    return options.to_date is None or row[_CREATED] < options.to_date


def _build(
    batch: _Batch, options: ExportOptions
) -> Iterator[tuple[ExportMessageTree | ExportMessageNode, int]]:
    """Validate each tree (or flat row) once, from plain dicts: far cheaper than building the models."""
    ids = _Ids(batch)
    for info in batch.trees:
        rows = batch.messages.get(info.tree_id, [])
        tree_id = ids.trees[info.tree_id]
        if options.flat:
            for row in _preorder(rows, options):
                node = _node(row, ids, batch, options, tree_id=tree_id, tree_state=info.state)
                yield ExportMessageNode.model_validate(node), 1
            continue
        root, size = _tree_root(rows, ids, batch, options)
        if root is None:
            continue
        extra = {k: v for k, v in (info.extra or {}).items() if k != IDS_KEY}
        tree = {"message_tree_id": tree_id, "tree_state": info.state, "prompt": root, "origin": info.origin}
        yield ExportMessageTree.model_validate({**tree, **extra}), size


def _sort_key(row: tuple[Any, ...]) -> tuple[bool, int, datetime, uuid.UUID]:
    rank = row[_RANK]
    return (rank is None, rank or 0, row[_CREATED], row[_ID])


def _children(rows: list[tuple[Any, ...]]) -> dict[uuid.UUID | None, list[tuple[Any, ...]]]:
    children: dict[uuid.UUID | None, list[tuple[Any, ...]]] = {}
    for row in sorted(rows, key=_sort_key):
        children.setdefault(row[_PARENT], []).append(row)
    return children


def _preorder(rows: list[tuple[Any, ...]], options: ExportOptions) -> Iterator[tuple[Any, ...]]:
    """The rows that pass the filters, parents before replies (orphans, if any, at the end)."""
    children = _children(rows)
    seen: set[uuid.UUID] = set()
    stack = list(reversed(children.get(None, [])))
    while stack:
        row = stack.pop()
        seen.add(row[_ID])
        stack.extend(reversed(children.get(row[_ID], [])))
        if _keep(row, options):
            yield row
    yield from (row for row in sorted(rows, key=_sort_key) if row[_ID] not in seen and _keep(row, options))


def _tree_root(
    rows: list[tuple[Any, ...]], ids: _Ids, batch: _Batch, options: ExportOptions
) -> tuple[dict[str, Any] | None, int]:
    """Link the kept messages of one tree below its prompt; None if the prompt itself is left out."""
    children = _children([row for row in rows if _keep(row, options)])
    roots = children.get(None, [])
    if not roots:
        return None, 0
    root = _node(roots[0], ids, batch, options)
    stack = [(root, roots[0][_ID])]
    size = 0
    while stack:
        node, message_id = stack.pop()
        size += 1
        for row in children.get(message_id, ()):
            child = _node(row, ids, batch, options)
            node["replies"].append(child)
            stack.append((child, row[_ID]))
    return root, size


def _node(
    row: tuple[Any, ...],
    ids: _Ids,
    batch: _Batch,
    options: ExportOptions,
    *,
    tree_id: str | None = None,
    tree_state: str | None = None,
) -> dict[str, Any]:
    """One message as the dict of an ``ExportMessageNode`` (validated once per tree, by the caller)."""
    message_id, extra = row[_ID], row[_EXTRA] or {}
    node = dict(zip(_FIELDS, row, strict=False))
    node["message_id"], node["parent_id"] = ids.message(message_id), ids.maybe_message(row[_PARENT])
    node["user_id"], node["replies"] = ids.user(row[_USER]), None if options.flat else []
    node["labels"] = _labels(batch, message_id) if options.labels else None
    node["events"] = _events(batch, message_id, ids, extra) if options.events else None
    node["detoxify"], node["message_tree_id"], node["tree_state"] = extra.get("detoxify"), tree_id, tree_state
    node.update((k, v) for k, v in extra.items() if k not in _RESERVED and k not in _KNOWN_FIELDS)
    return node


def _labels(batch: _Batch, message_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    return {
        name: {"value": math.fsum(values) / len(values), "count": len(values)}
        for name, values in batch.labels.get(message_id, {}).items()
    }


def _events(
    batch: _Batch, message_id: uuid.UUID, ids: _Ids, extra: dict[str, Any] | None
) -> dict[str, list[Any]] | None:
    events: dict[str, list[Any]] = {}
    emojis = batch.emojis.get(message_id)
    if emojis:
        events["emoji"] = [{"type": "emoji", "user_id": ids.user(u), "emoji": e} for u, e in emojis]
    rankings = batch.rankings.get(message_id)
    if rankings:
        events["ranking"] = [_ranking_event(user_id, payload, ids) for user_id, payload in rankings]
    for kind, kept in ((extra or {}).get(EVENTS_KEY) or {}).items():
        events.setdefault(kind, []).extend(kept)
    return events or None


def _ranking_event(user_id: uuid.UUID, payload: dict[str, Any], ids: _Ids) -> dict[str, Any]:
    return {
        "type": "ranking",
        "user_id": ids.user(user_id),
        "ranking": list(payload.get("ranking") or []),
        "ranked_message_ids": [ids.message(i) for i in payload.get("ranked_message_ids") or []],
        "ranking_parent_id": ids.maybe_message(payload.get("ranking_parent_id")),
        "message_tree_id": ids.tree(payload.get("message_tree_id")),
        "not_rankable": payload.get("not_rankable"),
    }
