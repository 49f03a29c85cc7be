"""The rows of an export, read a batch of trees at a time with SQLAlchemy Core as plain tuples.

Statements are built once per export; a batch takes a fixed number of queries whatever its size. Ids come
back as strings (``CAST(id AS TEXT)`` on PostgreSQL), dates as fixed-width UTC text (which sorts as the
dates do) and JSON columns as text, parsed only where needed: UUID, datetime and JSON objects for every
row cost more than all the rest the export does with them. On PostgreSQL the rows of other tables are
looked up per message (``LATERAL ... OFFSET 0``, which the planner cannot turn into a hash join over the
whole table for every batch) and list parameters are arrays (``= ANY(:ids)``, a short statement).

Label averages and counts. On PostgreSQL the database sums them per message over the label names seen so
far (``sum(CAST(labels -> name AS NUMERIC))`` and ``count(*) FILTER (WHERE labels ? name)``, on a second
connection, beside the batch's other queries), and Python divides: the NUMERIC sum is exact, so the mean
is within an ulp of the portable path's ``math.fsum``. Names come in ``jsonb`` order (by length, then
bytes: the order PostgreSQL keeps them in). A batch with a name not seen before first looks the names up;
a value that is not a number (an error in SQL) sends the batch to the portable path, which reads the label
rows and averages them in Python, as SQLite always does (names in order of appearance there).
"""

from __future__ import annotations

import json
import math
import queue
import threading
import uuid
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    FromClause,
    Select,
    Table,
    Text,
    TextClause,
    Uuid,
    any_,
    bindparam,
    cast,
    func,
    select,
    text,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import DateTime, TypeDecorator

from oasst.backend.models import Base
from oasst.backend.services.importer import IDS_KEY, IMPORT_CLIENT_ID, IMPORT_USERNAME, RANKING_PAYLOAD

if TYPE_CHECKING:
    from oasst.backend.services.export import ExportOptions

_TABLES = Base.metadata.tables
_M, _S, _L = _TABLES["message"], _TABLES["message_tree_state"], _TABLES["text_labels"]
_E, _R, _U = _TABLES["message_emoji"], _TABLES["message_reaction"], _TABLES["user"]

# A message row is a tuple: these node fields (``id`` is ``message_id``), then extra and message_tree_id.
FIELDS: tuple[str, ...] = (
    "message_id",
    "parent_id",
    "user_id",
    "created_date",  # fixed-width UTC text
    "text",
    "role",
    "lang",
    "review_count",
    "review_result",
    "deleted",
    "rank",
    "synthetic",
    "model_name",
    "emojis",  # JSON text
)
ID, PARENT, USER, CREATED, TEXT, ROLE, LANG, REVIEW_COUNT = range(8)
REVIEW_RESULT, DELETED, RANK, SYNTHETIC, MODEL_NAME, EMOJIS = range(8, 14)
EXTRA, TREE = len(FIELDS), len(FIELDS) + 1  # extra: parsed, a dict or None
Row = tuple[Any, ...]

_DATE_TEXT = 'YYYY-MM-DD"T"HH24:MI:SS.US'  # to_char's pattern for the fixed-width text
_MAX_LABEL_NAMES = 64  # more distinct label names than this: averages in Python
# Each batch transaction on PostgreSQL: no JIT compilation (it takes longer than these queries) and no
# parallel workers (starting them costs more than they save, and Python is busy on the other core).
_PG_SETTINGS = "SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0"


def utc_text(value: datetime) -> str:
    """A date as rows carry it (aware dates are converted to UTC; naive ones are UTC already)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds")


def iso_date(value: str) -> str:
    """A row's date as ``datetime.isoformat()`` writes it: no zero microseconds, ``+00:00``."""
    return (value[:-7] if value.endswith(".000000") else value) + "+00:00"


@dataclass(frozen=True)
class TreeInfo:
    tree_id: uuid.UUID
    key: str  # str(tree_id): the message_tree_id of its rows
    state: str
    origin: str | None
    extra: dict[str, Any] | None


@dataclass
class Batch:
    trees: list[TreeInfo]
    messages: dict[str, list[Row]] = field(default_factory=dict)  # by tree
    label_names: tuple[str, ...] = ()  # the names label_sums covers, in jsonb order
    label_sums: dict[str, str] = field(default_factory=dict)  # by message: "sum:count,..." per name
    label_values: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # by message, to average
    emojis: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # by message: (user, emoji)
    rankings: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)  # by message: (user, payload)
    users: dict[str, str | None] = field(default_factory=dict)  # exported ids unlike the row's UUID
    loading: Future[None] | None = None  # the labels, while they are read

    def wait(self) -> None:
        """Until every row is read (the labels may come after the rest)."""
        if self.loading is not None:
            self.loading.result()
            self.loading = None


def label_averages(batch: Batch, message_id: str) -> dict[str, dict[str, Any]]:
    """``{name: {"value": mean, "count": n}}`` of one message's labels."""
    sums = batch.label_sums.get(message_id)
    if sums is not None:
        pairs = (pair.partition(":") for pair in sums.split(","))
        return {
            name: {"value": float(total) / int(count), "count": int(count)}
            for name, (total, _, count) in zip(batch.label_names, pairs, strict=False)
            if count != "0"
        }
    return {
        name: {"value": math.fsum(values) / len(values), "count": len(values)}
        for name, values in batch.label_values.get(message_id, {}).items()
    }


# ---------------------------------------------------------------------------------------------------
# filters, order and ids


def sql_filters(options: ExportOptions, *, flat: bool) -> list[ColumnElement[bool]]:
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


class RowFilter:
    """The message filters in Python, for each message of a batch (mirrors ``sql_filters``)."""

    def __init__(self, options: ExportOptions) -> None:
        self.options = options
        self.user_id = None if options.user_id is None else str(options.user_id)
        self.from_date = None if options.from_date is None else utc_text(options.from_date)
        self.to_date = None if options.to_date is None else utc_text(options.to_date)

    def __call__(self, row: Row) -> bool:
        options = self.options
        if options.deleted != "include" and bool(row[DELETED]) != (options.deleted == "only"):
            return False
        if options.spam != "include" and row[REVIEW_RESULT] is not (options.spam == "accepted"):
            return False
        if options.prompts_only and row[PARENT] is not None:
            return False
        if not options.flat:
            return True
        if options.synthetic == "only" and not row[SYNTHETIC]:
            return False
        if self.user_id is not None and row[USER] != self.user_id:
            return False
        if self.from_date is not None and row[CREATED] < self.from_date:
            return False
        return self.to_date is None or row[CREATED] < self.to_date


def sort_key(row: Row) -> tuple[bool, int, str, str]:
    """Replies by rank (NULL last), then creation date, then id."""
    rank = row[RANK]
    return (rank is None, rank or 0, row[CREATED], row[ID])


def children(rows: list[Row]) -> dict[str | None, list[Row]]:
    """Rows by parent id, each list in reply order."""
    found: dict[str | None, list[Row]] = {}
    for row in sorted(rows, key=sort_key):
        siblings = found.get(row[PARENT])
        if siblings is None:
            found[row[PARENT]] = [row]
        else:
            siblings.append(row)
    return found


def preorder(rows: list[Row], keep: RowFilter) -> list[Row]:
    """The rows that pass the filters, parents before replies (orphans, if any, at the end)."""
    replies = children(rows)
    seen: set[str] = set()
    out = []
    stack = list(reversed(replies.get(None, [])))
    while stack:
        row = stack.pop()
        seen.add(row[ID])
        stack.extend(reversed(replies.get(row[ID], [])))
        if keep(row):
            out.append(row)
    out.extend(row for row in sorted(rows, key=sort_key) if row[ID] not in seen and keep(row))
    return out


def as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class Ids:
    """Exported ids of one batch: the original ids of imported rows, else the UUID as a string."""

    def __init__(self, batch: Batch) -> None:
        self.users = batch.users
        self.messages: dict[str, str] = {}
        for rows in batch.messages.values():
            for row in rows:
                if row[EXTRA] is not None:
                    original = (row[EXTRA].get(IDS_KEY) or {}).get("message_id")
                    if original is not None:
                        self.messages[row[ID]] = original
        self.trees: dict[str, str] = {}
        for info in batch.trees:
            original = ((info.extra or {}).get(IDS_KEY) or {}).get("message_tree_id")
            self.trees[info.key] = original or self.message(info.key)

    def message(self, message_id: Any) -> str:
        """A row's id, or one from a ranking payload (any spelling of a UUID, or not one)."""
        if message_id.__class__ is str:
            if not self.messages:
                return str(message_id)
            found = self.messages.get(message_id)
            if found is not None:
                return found
        key = message_id if isinstance(message_id, uuid.UUID) else as_uuid(message_id)
        return self.messages.get(str(key), str(message_id)) if key is not None else str(message_id)

    def maybe_message(self, message_id: Any) -> str | None:
        return None if message_id is None else self.message(message_id)

    def tree(self, tree_id: Any) -> str | None:
        found = self.trees.get(tree_id) if tree_id.__class__ is str else None
        if found is not None or tree_id is None:
            return found
        key = as_uuid(tree_id)
        if key is not None and str(key) in self.trees:
            return self.trees[str(key)]
        return self.maybe_message(tree_id)

    def user(self, user_id: str | None) -> str | None:
        return None if user_id is None else self.users.get(user_id, user_id)


# ---------------------------------------------------------------------------------------------------
# reading


class _IdText(TypeDecorator[str]):
    """A UUID column read as its canonical string (SQLite stores 32 hex digits)."""

    impl = Uuid
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)


class _DateText(TypeDecorator[str]):
    """A date column read as fixed-width UTC text (on SQLite; PostgreSQL formats it itself)."""

    impl = DateTime
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return utc_text(datetime.fromisoformat(value) if isinstance(value, str) else value)


class BatchReader:
    """Reads one export's batches: ``read(after)`` is the batch of trees after tree ``after``."""

    def __init__(self, engine: Engine, options: ExportOptions) -> None:
        self.engine, self.options = engine, options
        self.postgres = engine.dialect.name == "postgresql"
        with engine.connect() as conn:
            clients = _TABLES["api_client"]
            found = conn.execute(select(clients.c.id).where(clients.c.id == IMPORT_CLIENT_ID)).first()
        self.imported = found is not None
        self.in_batch = in_batch = self._one_of(_M.c.message_tree_id, "trees")
        self.first_page, self.next_page = self._page(first=True), self._page(first=False)
        self.messages = select(*self._message_columns()).where(in_batch)
        if options.prompts_only:
            self.messages = self.messages.where(_M.c.parent_id.is_(None))
        emojis = self._per_message(_E, ("message_id", "user_id", "emoji", "created_date"))
        ranking = _R.c.payload_type == RANKING_PAYLOAD
        rankings = self._per_message(
            _R, ("message_id", "user_id", "payload", "created_date", "task_id"), ranking
        )
        self.emojis = (
            select(self._id(emojis.c.message_id), self._id(emojis.c.user_id), emojis.c.emoji)
            .select_from(_M.join(emojis, emojis.c.message_id == _M.c.id))
            .where(in_batch)
            .order_by(emojis.c.created_date, emojis.c.user_id, emojis.c.emoji)
        )
        payload = cast(rankings.c.payload, Text)
        self.rankings = (
            select(self._id(rankings.c.message_id), self._id(rankings.c.user_id), payload)
            .select_from(_M.join(rankings, rankings.c.message_id == _M.c.id))
            .where(in_batch)
            .order_by(rankings.c.created_date, rankings.c.task_id)
        )
        users = select(self._id(_U.c.id), _U.c.username)
        self.users = users.where(_U.c.api_client_id == IMPORT_CLIENT_ID, self._one_of(_U.c.id, "users"))
        label_rows = select(self._id(_L.c.message_id), cast(_L.c.labels, Text))
        self.label_rows = label_rows.join(_M, _M.c.id == _L.c.message_id).where(in_batch)
        label_names = select(func.jsonb_object_keys(_L.c.labels)).join(_M, _M.c.id == _L.c.message_id)
        self.label_names_stmt = label_names.where(in_batch).distinct()
        self.label_names: tuple[str, ...] = ()
        self.label_sql: TextClause | None = None  # for label_names; None: not built yet
        # on PostgreSQL the label sums, the database's biggest job, run beside the batch's other queries
        # on a second connection, so that the database can use the core Python leaves it
        self.sql_labels = self.postgres and options.labels
        self.helper = ThreadPoolExecutor(1, "oasst-export-labels") if self.sql_labels else None

    def __enter__(self) -> BatchReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.helper is not None:
            self.helper.shutdown()

    def read(self, after: uuid.UUID | None) -> Batch | None:
        """The next batch of trees with their rows, or None after the last one."""
        batch = self.start(after)
        if batch is not None:
            batch.wait()
        return batch

    def start(self, after: uuid.UUID | None) -> Batch | None:
        """Like ``read``, but on PostgreSQL the label sums may still be on their way: ``Batch.wait()``.
        They run on a second connection, one batch after another, beside the rest of the reading."""
        with self.engine.connect() as conn:
            self._begin(conn)
            page = self.first_page if after is None else self.next_page
            trees = [
                TreeInfo(tree_id, str(tree_id), state, origin, _json(extra))
                for tree_id, state, origin, extra in conn.execute(page, {"after": after}).all()
            ]
            if not trees:
                return None
            batch = Batch(trees=trees)
            params = {"trees": [tree.tree_id for tree in trees]}
            if self.options.labels and self.helper is not None:
                batch.loading = self.helper.submit(self._read_labels_apart, batch, params)
            self._read_messages(conn, batch, params)
            user_ids = set()
            if self.imported:
                user_ids = {row[USER] for rows in batch.messages.values() for row in rows}
            if self.options.events:
                self._read_events(conn, batch, params, user_ids)
            user_ids.discard(None)
            if user_ids:
                batch.users = self._imported_user_ids(conn, user_ids)
            if self.options.labels and self.helper is None:
                self._python_labels(conn, batch, params)
        return batch

    def _begin(self, conn: Connection) -> None:
        if self.postgres:
            conn.exec_driver_sql(_PG_SETTINGS)

    def _read_messages(self, conn: Connection, batch: Batch, params: dict[str, Any]) -> None:
        messages = batch.messages
        row: Row
        for row in conn.execute(self.messages, params).all():
            if row[EXTRA] is not None:
                row = (*row[:EXTRA], json.loads(row[EXTRA]), row[TREE])
            found = messages.get(row[TREE])
            if found is None:
                messages[row[TREE]] = [row]
            else:
                found.append(row)

    def _read_events(
        self, conn: Connection, batch: Batch, params: dict[str, Any], user_ids: set[str]
    ) -> None:
        emojis, imported = batch.emojis, self.imported
        for message_id, user_id, emoji in conn.execute(self.emojis, params).all():
            found = emojis.get(message_id)
            if found is None:
                emojis[message_id] = [(user_id, emoji)]
            else:
                found.append((user_id, emoji))
            if imported:
                user_ids.add(user_id)
        for message_id, user_id, payload in conn.execute(self.rankings, params).all():
            batch.rankings.setdefault(message_id, []).append((user_id, _json(payload) or {}))
            if imported:
                user_ids.add(user_id)

    def _imported_user_ids(self, conn: Connection, user_ids: set[str]) -> dict[str, str | None]:
        """Imported users are exported under their original id (their username); the import user as null."""
        found: dict[str, str | None] = {}
        for user_id, username in conn.execute(self.users, {"users": [uuid.UUID(u) for u in user_ids]}):
            if username == IMPORT_USERNAME:
                found[user_id] = None
            elif username != user_id:
                found[user_id] = username
        return found

    # -- labels

    def _read_labels_apart(self, batch: Batch, params: dict[str, Any]) -> None:
        with self.engine.connect() as conn:
            self._begin(conn)
            if self.sql_labels:
                try:
                    if self._sql_labels(conn, batch, params):
                        return
                except DBAPIError:  # a value that is not a number: the portable path decides what it means
                    conn.rollback()
                batch.label_sums = {}
            self._python_labels(conn, batch, params)

    def _sql_labels(self, conn: Connection, batch: Batch, params: dict[str, Any]) -> bool:
        """Sums and counts of the batch's labels per message; False if Python is to average them."""
        if self.label_sql is None and not self._learn_label_names(conn, params):
            return False
        assert self.label_sql is not None
        rows = conn.execute(self.label_sql, params).all()
        if any(unknown for _, _, unknown in rows):  # a name not seen before: once more, with it
            if not self._learn_label_names(conn, params):
                return False
            rows = conn.execute(self.label_sql, params).all()
        batch.label_names = self.label_names
        batch.label_sums = {message_id: sums for message_id, sums, _unknown in rows}
        return True

    def _learn_label_names(self, conn: Connection, params: dict[str, Any]) -> bool:
        """Add the batch's label names to those the statement covers; False if there are too many."""
        found = set(conn.execute(self.label_names_stmt, params).scalars())
        known = sorted(set(self.label_names) | found, key=_jsonb_order)
        if len(known) > _MAX_LABEL_NAMES:
            self.sql_labels = False
            return False
        self.label_names = tuple(known)
        self.label_sql = _label_statement(self.label_names)
        return True

    def _python_labels(self, conn: Connection, batch: Batch, params: dict[str, Any]) -> None:
        labels = batch.label_values
        for message_id, raw in conn.execute(self.label_rows, params).all():
            acc = labels.get(message_id)
            if acc is None:
                acc = labels[message_id] = {}
            for name, value in (json.loads(raw) if raw else {}).items():
                values = acc.get(name)
                if values is None:
                    acc[name] = [value]
                else:
                    values.append(value)
        if self.postgres:  # names in jsonb order, as the SQL path has them
            for message_id, acc in labels.items():
                labels[message_id] = dict(sorted(acc.items(), key=lambda item: _jsonb_order(item[0])))

    # -- statements

    def _one_of(self, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        """``column`` in the list parameter ``name``; on PostgreSQL ``= ANY(array)``: 200 expanded
        parameters make a statement too long for psycopg to cache, parsed afresh every time."""
        if self.postgres:
            return column == any_(bindparam(name, type_=ARRAY(Uuid)))
        return column.in_(bindparam(name, expanding=True))

    def _id(self, column: ColumnElement[Any]) -> ColumnElement[str]:
        return cast(column, Text) if self.postgres else type_coerce(column, _IdText())

    def _message_columns(self) -> list[ColumnElement[Any]]:
        created: ColumnElement[Any]
        if self.postgres:
            created = func.to_char(func.timezone("UTC", _M.c.created_date), _DATE_TEXT)
        else:
            created = type_coerce(_M.c.created_date, _DateText())
        return [
            self._id(_M.c.id),
            self._id(_M.c.parent_id),
            self._id(_M.c.user_id),
            created,
            *(_M.c[name] for name in FIELDS[TEXT:EMOJIS]),
            cast(_M.c.emojis, Text),
            func.nullif(cast(_M.c.extra, Text), "null"),  # SQLAlchemy stores None as JSON null
            self._id(_M.c.message_tree_id),
        ]

    def _page(self, *, first: bool) -> Select[Any]:
        options = self.options
        stmt = select(_S.c.message_tree_id, _S.c.state, _S.c.origin, cast(_S.c.extra, Text))
        if not first:
            stmt = stmt.where(_S.c.message_tree_id > bindparam("after", type_=Uuid))
        if options.state_filter:
            stmt = stmt.where(_S.c.state.in_(options.state_filter))
        if options.langs:
            stmt = stmt.where(_S.c.lang.in_(options.langs))
        if options.synthetic == "exclude":
            other = _M.alias("any_message")  # the prompt is joined as _M below; this is another message
            synthetic = select(other.c.id).where(
                other.c.message_tree_id == _S.c.message_tree_id, other.c.synthetic.is_(True)
            )
            stmt = stmt.where(~self._per_tree(synthetic).exists())
        if options.flat:
            matching = select(_M.c.id).where(_M.c.message_tree_id == _S.c.message_tree_id)
            stmt = stmt.where(self._per_tree(matching.where(*sql_filters(options, flat=True))).exists())
        else:
            stmt = stmt.join(_M, _M.c.id == _S.c.message_tree_id).where(*sql_filters(options, flat=False))
        return stmt.order_by(_S.c.message_tree_id).limit(options.batch_trees)

    def _per_tree(self, stmt: Select[Any]) -> Select[Any]:
        """A subquery run per tree of the page; on PostgreSQL ``OFFSET 0`` keeps the planner from making
        it a join that reads the whole message table for every page (no index has ``synthetic``)."""
        return stmt.offset(0) if self.postgres else stmt

    def _per_message(self, table: Table, columns: tuple[str, ...], *where: ColumnElement[bool]) -> FromClause:
        """``table``'s rows of a message, to join to the batch's messages: on PostgreSQL a LATERAL
        subquery with ``OFFSET 0``, an index lookup per message (the planner hashes the table otherwise)."""
        rows = select(*(table.c[name] for name in columns)).where(*where)
        if not self.postgres:
            return rows.subquery()
        return rows.where(table.c.message_id == _M.c.id).offset(0).lateral()


def read_ahead(reader: BatchReader, depth: int) -> Generator[Batch, None, None]:
    """The batches in order, read by a thread that keeps up to ``depth`` of them ready: it mostly waits
    for the database (without the GIL), so that the database works while the caller's Python does."""
    ready: queue.Queue[Batch | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Batch | BaseException | None) -> None:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read_all() -> None:
        try:
            batch = reader.start(None)
            while batch is not None and not stop.is_set():
                put(batch)
                batch = reader.start(batch.trees[-1].tree_id)
            put(None)
        except BaseException as exc:  # handed to the caller
            put(exc)

    thread = threading.Thread(target=read_all, name="oasst-export-reader", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            item.wait()
            yield item
    finally:
        stop.set()
        thread.join()


def _json(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


def _jsonb_order(name: str) -> tuple[int, bytes]:
    encoded = name.encode()
    return len(encoded), encoded


def _label_statement(names: tuple[str, ...]) -> TextClause:
    """Per message of a batch with label rows: "sum:count" of each of ``names``, joined by commas (the
    sum empty where the count is 0); and whether the message has a name beyond them. The names are SQL
    literals (``literal_execute``), which the planner folds: parameters cost a tenth more."""
    sums = []
    for i in range(len(names)):
        name = f"CAST(:k{i} AS TEXT)"
        sums.append(
            f"sum(CAST(l.labels -> {name} AS NUMERIC)), ':', count(*) FILTER (WHERE l.labels ? {name})"
        )
    columns = ", ',', ".join(sums) or "''"
    known = f"ARRAY[{', '.join(f'CAST(:k{i} AS TEXT)' for i in range(len(names)))}]" if names else "'{}'"
    # LATERAL with OFFSET 0: an index lookup per message (the planner would rather hash the whole table)
    return text(
        "SELECT CAST(m.id AS TEXT), g.sums, g.unknown FROM message AS m CROSS JOIN LATERAL ("
        f"SELECT concat({columns}) AS sums, "
        f"bool_or(l.labels - CAST({known} AS TEXT[]) <> CAST('{{}}' AS JSONB)) AS unknown, count(*) AS n "
        "FROM text_labels AS l WHERE l.message_id = m.id OFFSET 0) AS g "
        "WHERE m.message_tree_id = ANY(:trees) AND g.n > 0"
    ).bindparams(
        bindparam("trees", type_=ARRAY(Uuid)),
        *(bindparam(f"k{i}", name, type_=Text, literal_execute=True) for i, name in enumerate(names)),
    )
