"""Export message trees as oasst JSONL (the public oasst1/oasst2 format), streaming.

Trees are read in keyset-paginated batches of ``batch_trees`` (by ``message_tree_id``) with a fixed number
of queries each (see ``export_rows``); each batch is built, written and dropped, in its own short
transaction, so memory stays flat and a long export holds no lock or snapshot.

Two ways to build the output from the rows of a batch. ``iter_export`` validates an ``ExportMessageTree``
(or ``ExportMessageNode``) per item, for callers that want the models. ``export_to`` writes JSON lines
straight from the rows, byte for byte what ``oasst.data.write_message_trees`` writes for those models (keys
and their order, nulls, dates, floats, unknown fields; ids hashed as ``Anonymizer`` hashes them): a pydantic
model per message cost more than all the rest of the export. A tree whose data is out of the ordinary (a
value pydantic would coerce or reject, a float that is not finite, events kept from an import) goes through
the models instead, so the line, or the error, is the same either way.

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
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import select

from oasst.backend.db import Database
from oasst.backend.models import Base
from oasst.backend.services.export_rows import (
    CREATED,
    EMOJIS,
    EXTRA,
    FIELDS,
    ID,
    PARENT,
    ROLE,
    TEXT,
    USER,
    Batch,
    BatchReader,
    Ids,
    Row,
    RowFilter,
    TreeInfo,
    as_uuid,
    children,
    iso_date,
    label_averages,
    preorder,
    read_ahead,
)
from oasst.backend.services.importer import EVENTS_KEY, IDS_KEY, IMPORT_CLIENT_ID
from oasst.data import Anonymizer, ExportMessageNode, ExportMessageTree, Target
from oasst.data.schemas import DetoxifyRating
from oasst.data.writer import write_jsonl_text

DEFAULT_STATE = "ready_for_export"
READ_AHEAD = 2  # batches read ahead of the one being built, so that the database never waits for Python
GZIP_LEVEL = 1  # .gz output: level 6 made a labelled export ~50% slower for a file ~25% smaller
Deleted = Literal["exclude", "include", "only"]
Spam = Literal["accepted", "include", "only"]
Synthetic = Literal["exclude", "include", "only"]
T = TypeVar("T")

_U = Base.metadata.tables["user"]
_RESERVED = {IDS_KEY, EVENTS_KEY}
_NODE_SKIPPED = _RESERVED | set(ExportMessageNode.model_fields)  # extra keys that are not written back
_TREE_FIELDS = set(ExportMessageTree.model_fields)
_TREE_SKIPPED = {IDS_KEY}


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
    batch_trees: int = 200
    gzip_level: int = GZIP_LEVEL  # for paths ending in .gz: 1 (fastest) to 9 (smallest)

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
    build = _LineBuilder(options).build
    batches = _produce(database, options, build, summary, on_progress)
    # Batches live long enough to reach the oldest GC generation, so collections would walk them over and
    # over (~8% of the export's CPU), and every object of SQLAlchemy, pydantic and the rest unless
    # frozen. Collections are rarer meanwhile: the export makes no garbage cycles worth collecting early.
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
    try:
        write_jsonl_text(target, ("".join(lines) for lines in batches), compresslevel=options.gzip_level)
    finally:
        gc.set_threshold(*thresholds)
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
    anonymizer = None if options.anonymizer_seed is None else Anonymizer(options.anonymizer_seed)

    def build(batch: Batch) -> list[tuple[ExportMessageTree | ExportMessageNode, int]]:
        return [(_anonymize(anonymizer, item), n) for item, n in _models(batch, options)]

    for items in _produce(database, options, build, summary or ExportSummary(), on_progress):
        yield from items


def find_user_id(database: Database, exported_id: str) -> uuid.UUID | None:
    """The user behind a ``user_id`` as exports write it: an imported user's original id, or a UUID."""
    with database.engine.connect() as conn:
        imported = select(_U.c.id).where(_U.c.api_client_id == IMPORT_CLIENT_ID, _U.c.username == exported_id)
        found = conn.execute(imported).scalar()
        if found is None and (as_id := as_uuid(exported_id)) is not None:
            found = conn.execute(select(_U.c.id).where(_U.c.id == as_id)).scalar()
    return found


def _produce(
    database: Database,
    options: ExportOptions,
    build: Callable[[Batch], list[tuple[T, int]]],
    summary: ExportSummary,
    on_progress: Callable[[ExportSummary], None] | None,
) -> Iterator[list[T]]:
    """Read and build the batches, yielding each one's items (up to the limit) and counting them."""
    with BatchReader(database.engine, options) as reader, closing(read_ahead(reader, READ_AHEAD)) as batches:
        for batch in batches:
            items = []
            for item, messages in build(batch):
                items.append(item)
                summary.messages += messages
                summary.trees += not options.flat
                if options.limit is not None and _emitted(summary, options) >= options.limit:
                    yield items
                    return
            yield items
            if on_progress is not None:
                on_progress(summary)


def _emitted(summary: ExportSummary, options: ExportOptions) -> int:
    return summary.messages if options.flat else summary.trees


def _anonymize(anonymizer: Anonymizer | None, item: ExportMessageTree | ExportMessageNode) -> Any:
    if anonymizer is None:
        return item
    if isinstance(item, ExportMessageTree):
        return anonymizer.anonymize_tree(item)
    return anonymizer.anonymize_message(item)


# ---------------------------------------------------------------------------------------------------
# the models


def _models(
    batch: Batch, options: ExportOptions
) -> Iterator[tuple[ExportMessageTree | ExportMessageNode, int]]:
    """Validate each tree (or flat row) once, from plain dicts: far cheaper than building the models."""
    ids, keep = Ids(batch), RowFilter(options)
    for info in batch.trees:
        rows = batch.messages.get(info.key, [])
        if options.flat:
            for row in preorder(rows, keep):
                yield _flat_model(row, ids, batch, options, info), 1
            continue
        if (tree := _tree_model(info, rows, ids, batch, options, keep)) is not None:
            yield tree


def _tree_model(
    info: TreeInfo, rows: list[Row], ids: Ids, batch: Batch, options: ExportOptions, keep: RowFilter
) -> tuple[ExportMessageTree, int] | None:
    replies = children([row for row in rows if keep(row)])
    roots = replies.get(None, [])
    if not roots:
        return None
    root = _node(roots[0], ids, batch, options)
    stack = [(root, roots[0][ID])]
    size = 0
    while stack:
        node, message_id = stack.pop()
        size += 1
        for row in replies.get(message_id, ()):
            child = _node(row, ids, batch, options)
            node["replies"].append(child)
            stack.append((child, row[ID]))
    extra = {k: v for k, v in (info.extra or {}).items() if k != IDS_KEY}
    tree = {
        "message_tree_id": ids.trees[info.key],
        "tree_state": info.state,
        "prompt": root,
        "origin": info.origin,
    }
    return ExportMessageTree.model_validate({**tree, **extra}), size


def _flat_model(
    row: Row, ids: Ids, batch: Batch, options: ExportOptions, info: TreeInfo
) -> ExportMessageNode:
    node = _node(row, ids, batch, options, tree_id=ids.trees[info.key], tree_state=info.state)
    return ExportMessageNode.model_validate(node)


def _node(
    row: Row,
    ids: Ids,
    batch: Batch,
    options: ExportOptions,
    *,
    tree_id: str | None = None,
    tree_state: str | None = None,
) -> dict[str, Any]:
    """One message as the dict of an ``ExportMessageNode`` (validated once per tree, by the caller)."""
    message_id, extra = row[ID], row[EXTRA] or {}
    node = dict(zip(FIELDS, row, strict=False))
    node["message_id"], node["parent_id"] = ids.message(message_id), ids.maybe_message(row[PARENT])
    node["user_id"], node["replies"] = ids.user(row[USER]), None if options.flat else []
    created = row[CREATED]
    node["created_date"] = None if created is None else datetime.fromisoformat(iso_date(created))
    node["emojis"] = None if row[EMOJIS] is None else json.loads(row[EMOJIS])
    node["labels"] = label_averages(batch, message_id) if options.labels else None
    node["events"] = _events(batch, message_id, ids, extra) if options.events else None
    node["detoxify"], node["message_tree_id"], node["tree_state"] = extra.get("detoxify"), tree_id, tree_state
    node.update((k, v) for k, v in extra.items() if k not in _NODE_SKIPPED)
    return node


def _events(
    batch: Batch, message_id: str, ids: Ids, extra: dict[str, Any] | None
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


def _ranking_event(user_id: str, payload: dict[str, Any], ids: Ids) -> dict[str, Any]:
    return {
        "type": "ranking",
        "user_id": ids.user(user_id),
        "ranking": list(payload.get("ranking") or []),
        "ranked_message_ids": [ids.message(i) for i in payload.get("ranked_message_ids") or []],
        "ranking_parent_id": ids.maybe_message(payload.get("ranking_parent_id")),
        "message_tree_id": ids.tree(payload.get("message_tree_id")),
        "not_rankable": payload.get("not_rankable"),
    }


# ---------------------------------------------------------------------------------------------------
# the lines, straight from the rows


class _Unusual(Exception):
    """Data the line builder leaves to the models (which write it, or reject it, as they always did)."""


_string = json.encoder.encode_basestring  # what json.dumps uses (in C)
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode  # pydantic writes extras' NaN as null
_BOOL = {True: "true", False: "false", None: "null"}
_ROLES = {"prompter": '"prompter"', "assistant": '"assistant"'}
_DETOXIFY = tuple(DetoxifyRating.model_fields)
_IN_TREE = ', "message_tree_id": null, "tree_state": null'  # the tail of a node inside a tree


def _maybe_string(value: str | None) -> str:
    return "null" if value is None else _string(value)


def _int(value: int | None) -> str:
    if value is None:
        return "null"
    if value.__class__ is not int:
        raise _Unusual
    return str(value)


def _float(value: float) -> str:
    if value.__class__ is not float or not math.isfinite(value):
        raise _Unusual
    return repr(value)


def _extras(extra: dict[str, Any], skipped: set[str]) -> str:
    """Unknown fields, after the known ones, as pydantic writes extras."""
    return "".join(f", {_string(k)}: {_dumps(v)}" for k, v in extra.items() if k not in skipped)


class _LineBuilder:
    """One JSON line per tree (or flat row), as ``json.dumps(model.model_dump(mode="json"))`` has it.

    Pieces that recur (the fields from role to emojis, emoji events, one label's mean and count) are kept
    as written, by what they are written from.
    """

    def __init__(self, options: ExportOptions) -> None:
        self.options = options
        self.anonymizer = None if options.anonymizer_seed is None else Anonymizer(options.anonymizer_seed)
        self.emojis: dict[str, str] = {}  # emojis JSON as stored -> as written
        self.middles: dict[Row, str] = {}  # the fields from role to emojis -> as written
        self.emoji_events = _EmojiEvents()
        self.label_names: tuple[str, ...] = ()
        self.label_pieces: list[_LabelPieces] = []  # per label name: "sum:count" -> as written

    def build(self, batch: Batch) -> list[tuple[str, int]]:
        self.batch, self.keep = batch, RowFilter(self.options)
        self.real_ids = Ids(batch)
        self.ids = self.real_ids if self.anonymizer is None else _AnonymousIds(self.real_ids, self.anonymizer)
        self.emoji_events.user = self.ids.user
        caches: list[dict[Any, str]] = [self.emojis, self.middles, self.emoji_events, *self.label_pieces]
        for cache in caches:
            if len(cache) > 100_000:
                cache.clear()
        lines: list[tuple[str, int]] = []
        for info in batch.trees:
            rows = batch.messages.get(info.key, [])
            if self.options.flat:
                lines.extend((self._flat_line(row, info), 1) for row in preorder(rows, self.keep))
            elif (line := self._tree_line(info, rows)) is not None:
                lines.append(line)
        return lines

    def _tree_line(self, info: TreeInfo, rows: list[Row]) -> tuple[str, int] | None:
        replies = children([row for row in rows if self.keep(row)])
        roots = replies.get(None)
        if not roots:
            return None
        try:
            prompt, size = self._subtree(roots[0], replies)
            extra = info.extra or {}
            if extra.__class__ is not dict or not _TREE_FIELDS.isdisjoint(extra):
                raise _Unusual  # {**tree, **extra} would replace a field
            head = f'{{"message_tree_id": {_string(self.ids.trees[info.key])}, "tree_state": {_maybe_string(info.state)}'
            tail = f'"origin": {_maybe_string(info.origin)}{_extras(extra, _TREE_SKIPPED)}}}\n'
            return f'{head}, "prompt": {prompt}, {tail}', size
        except Exception:  # the models write it, or raise what they always raised
            tree = _tree_model(info, rows, self.real_ids, self.batch, self.options, self.keep)
            assert tree is not None
            return _model_line(_anonymize(self.anonymizer, tree[0])), tree[1]

    def _subtree(self, row: Row, replies: dict[str | None, list[Row]]) -> tuple[str, int]:
        below = replies.get(row[ID])
        if not below:
            return self._node(row, "[]", _IN_TREE), 1
        size, parts = 1, []
        for reply in below:
            part, n = self._subtree(reply, replies)
            parts.append(part)
            size += n
        return self._node(row, f"[{', '.join(parts)}]", _IN_TREE), size

    def _flat_line(self, row: Row, info: TreeInfo) -> str:
        try:
            tree = f', "message_tree_id": {_string(self.ids.trees[info.key])}, "tree_state": {_maybe_string(info.state)}'
            return self._node(row, "null", tree) + "\n"
        except Exception:
            node = _flat_model(row, self.real_ids, self.batch, self.options, info)
            return _model_line(_anonymize(self.anonymizer, node))

    def _node(self, row: Row, replies: str, tail: str) -> str:
        ids, options = self.ids, self.options
        message_id, parent, extra, created = row[ID], row[PARENT], row[EXTRA], row[CREATED]
        if extra is not None:
            if extra.__class__ is not dict:
                raise _Unusual
            tail += _extras(extra, _NODE_SKIPPED)
        fields = row[ROLE : EMOJIS + 1]
        middle = self.middles.get(fields)
        if middle is None:
            middle = self.middles[fields] = self._middle(fields)
        return (
            f'{{"message_id": {_string(ids.message(message_id))}, '
            f'"parent_id": {"null" if parent is None else _string(ids.message(parent))}, '
            f'"user_id": {_maybe_string(ids.user(row[USER]))}, '
            f'"created_date": {"null" if created is None else _string(iso_date(created))}, '
            f'"text": {_string(row[TEXT])}, {middle}, "replies": {replies}, '
            f'"labels": {self._labels(message_id) if options.labels else "null"}, '
            f'"events": {self._events(message_id, extra) if options.events else "null"}, '
            f'"detoxify": {"null" if extra is None else _detoxify(extra.get("detoxify"))}{tail}}}'
        )

    def _middle(self, fields: Row) -> str:
        role, lang, review_count, review_result, deleted, rank, synthetic, model_name, emojis = fields
        return (
            f'"role": {_ROLES[role]}, "lang": {_maybe_string(lang)}, "review_count": {_int(review_count)}, '
            f'"review_result": {_BOOL[review_result]}, "deleted": {_BOOL[deleted]}, "rank": {_int(rank)}, '
            f'"synthetic": {_BOOL[synthetic]}, "model_name": {_maybe_string(model_name)}, '
            f'"emojis": {self._emojis(emojis)}'
        )

    def _emojis(self, raw: str | None) -> str:
        if raw is None:
            return "null"
        found = self.emojis.get(raw)
        if found is None:
            emojis = json.loads(raw)
            if emojis is not None and (
                emojis.__class__ is not dict or any(n.__class__ is not int for n in emojis.values())
            ):
                raise _Unusual  # pydantic would coerce, or reject, the counts
            found = self.emojis[raw] = _dumps(emojis)
        return found

    def _labels(self, message_id: str) -> str:
        batch = self.batch
        sums = batch.label_sums.get(message_id)
        if sums is not None:
            if self.label_names is not batch.label_names:
                self.label_names = batch.label_names
                self.label_pieces = [_LabelPieces(name) for name in batch.label_names]
            pieces = [found[pair] for found, pair in zip(self.label_pieces, sums.split(","), strict=False)]
            return "{" + ", ".join(filter(None, pieces)) + "}"
        values = batch.label_values.get(message_id)
        if not values:
            return "{}"
        fsum = math.fsum
        items = (
            f'{_string(k)}: {{"value": {_float(fsum(v) / len(v))}, "count": {len(v)}}}'
            for k, v in values.items()
        )
        return "{" + ", ".join(items) + "}"

    def _events(self, message_id: str, extra: dict[str, Any] | None) -> str:
        if extra is not None and extra.get(EVENTS_KEY):
            raise _Unusual  # events kept by the importer: any type, any field
        events = []
        emojis = self.batch.emojis.get(message_id)
        if emojis:
            found = self.emoji_events
            events.append(f'"emoji": [{", ".join([found[pair] for pair in emojis])}]')
        rankings = self.batch.rankings.get(message_id)
        if rankings:
            events.append(f'"ranking": [{", ".join([self._ranking(u, payload) for u, payload in rankings])}]')
        return f"{{{', '.join(events)}}}" if events else "null"

    def _ranking(self, user_id: str, payload: dict[str, Any]) -> str:
        ids = self.ids
        ranking = list(payload.get("ranking") or [])
        if any(rank.__class__ is not int for rank in ranking):
            raise _Unusual
        ranked = ", ".join([_string(ids.message(i)) for i in payload.get("ranked_message_ids") or []])
        not_rankable = payload.get("not_rankable")
        if not_rankable is not None and not_rankable is not True and not_rankable is not False:
            raise _Unusual
        return (
            f'{{"type": "ranking", "user_id": {_maybe_string(ids.user(user_id))}, '
            f'"ranking": [{", ".join(map(str, ranking))}], "ranked_message_ids": [{ranked}], '
            f'"ranking_parent_id": {_maybe_string(ids.maybe_message(payload.get("ranking_parent_id")))}, '
            f'"message_tree_id": {_maybe_string(ids.tree(payload.get("message_tree_id")))}, '
            f'"not_rankable": {_BOOL[not_rankable]}}}'
        )


class _AnonymousIds:
    """``Ids`` that hash what they return, as ``Anonymizer`` does the models' (trees in "message_tree")."""

    def __init__(self, ids: Ids, anonymizer: Anonymizer) -> None:
        self.ids, self.hash = ids, anonymizer.anonymize
        self.trees = {key: self.hash("message_tree", tree_id) for key, tree_id in ids.trees.items()}

    def message(self, message_id: Any) -> str:
        return self.hash("message", self.ids.message(message_id))

    def maybe_message(self, message_id: Any) -> str | None:
        return None if message_id is None else self.message(message_id)

    def tree(self, tree_id: Any) -> str | None:
        found = self.ids.tree(tree_id)
        return None if found is None else self.hash("message_tree", found)

    def user(self, user_id: str | None) -> str | None:
        found = self.ids.user(user_id)
        return None if found is None else self.hash("user", found)


class _EmojiEvents(dict[tuple[str, str], str]):
    """Emoji events as written, by (user, emoji): a user's exported id is the same in every batch."""

    user: Callable[[str | None], str | None]

    def __missing__(self, pair: tuple[str, str]) -> str:
        user, emoji = pair
        event = f'{{"type": "emoji", "user_id": {_maybe_string(self.user(user))}, "emoji": {_string(emoji)}}}'
        self[pair] = event
        return event


class _LabelPieces(dict[str, str]):
    """One label's ``"name": {"value": mean, "count": n}`` by its "sum:count" ('' where the count is 0).
    Label values are few (0, 0.25, ... 1), so most messages find theirs here."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.key = _string(name)

    def __missing__(self, pair: str) -> str:
        total, _, count = pair.partition(":")
        mean = "" if count == "0" else _float(float(total) / int(count))
        piece = self[pair] = mean and f'{self.key}: {{"value": {mean}, "count": {count}}}'
        return piece


def _detoxify(value: Any) -> str:
    if value is None:
        return "null"
    if value.__class__ is not dict or len(value) != len(_DETOXIFY):
        raise _Unusual  # extra fields, or missing ones
    return "{" + ", ".join(f'"{name}": {_float(value[name])}' for name in _DETOXIFY) + "}"


def _model_line(item: ExportMessageTree | ExportMessageNode) -> str:
    return json.dumps(item.model_dump(mode="json"), ensure_ascii=False) + "\n"
