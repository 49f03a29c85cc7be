"""``export_to`` writes its lines straight from the rows: byte for byte what the models write.

And on PostgreSQL the label sums computed in SQL give the averages and counts of the portable Python path.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import insert, update

import oasst.backend.services.export as export_module
from oasst.backend.db import Database, make_engine
from oasst.backend.models import Base
from oasst.backend.services.export import ExportOptions, export_to, find_user_id, iter_export
from oasst.backend.services.export_rows import Batch, BatchReader, label_averages
from oasst.backend.services.importer import exported_to_uuid, import_files
from oasst.backend.settings import Settings
from oasst.data import write_message_trees, write_messages
from tests.backend.factories import make_client, make_db_user, make_tree
from tests.backend.test_import import tree, write_jsonl
from tests.conftest import _truncate as truncate_tables
from tests.conftest import make_test_settings, sample_missing

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "oasst2_sample.trees.jsonl"
TABLES = Base.metadata.tables
EVERYTHING = ExportOptions(
    states=("all",), deleted="include", spam="include", synthetic="include", labels=True, events=True
)
ON_THE_SAMPLE = {
    "everything": EVERYTHING,
    "default": ExportOptions(),
    "labels, small batches": ExportOptions(states=("all",), labels=True, batch_trees=7),
    "anonymised": replace(EVERYTHING, anonymizer_seed="s3cret"),
    "deleted only": ExportOptions(deleted="only", labels=True, events=True),
    "spam only": ExportOptions(spam="only", synthetic="include", labels=True, events=True),
    "prompts only, limit": ExportOptions(prompts_only=True, states=("all",), limit=100, labels=True),
    "flat, limit": ExportOptions(spam="only", limit=3),
}


def model_lines(database: Database, options: ExportOptions) -> bytes:
    """The export as the models write it."""
    out = io.BytesIO()
    items: Any = iter_export(database, options)
    (write_messages if options.flat else write_message_trees)(out, items)
    return out.getvalue()


def fast_lines(database: Database, options: ExportOptions) -> bytes:
    out = io.BytesIO()
    export_to(database, out, options)
    return out.getvalue()


def assert_same_lines(expected: bytes, actual: bytes) -> None:
    expected_lines, actual_lines = expected.splitlines(), actual.splitlines()
    assert len(actual_lines) == len(expected_lines)
    for i, (want, got) in enumerate(zip(expected_lines, actual_lines, strict=True)):
        assert got == want, f"line {i + 1} differs"


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The items the line builder left to the models."""
    found: list[Any] = []
    model_line = export_module._model_line

    def spy(item: Any) -> str:
        found.append(item)
        return model_line(item)

    monkeypatch.setattr(export_module, "_model_line", spy)
    return found


@pytest.fixture
def sample(database: Database, settings: Settings) -> Database:
    if not SAMPLE.exists():
        sample_missing(f"the oasst2 sample at {SAMPLE}")
    import_files(database, [SAMPLE], cfg=settings.tree_manager)
    return database


@pytest.mark.parametrize("name", ON_THE_SAMPLE)
def test_the_lines_of_the_sample_are_the_models_lines(
    sample: Database, name: str, fallbacks: list[Any]
) -> None:
    options = ON_THE_SAMPLE[name]
    expected = model_lines(sample, options)
    assert expected
    assert_same_lines(expected, fast_lines(sample, options))
    assert fallbacks == []  # the sample is ordinary data: every line came from the rows


def test_a_users_messages_gzipped(sample: Database, tmp_path: Path, fallbacks: list[Any]) -> None:
    first = json.loads(SAMPLE.read_text().splitlines()[0])
    user_id = find_user_id(sample, first["prompt"]["user_id"])
    assert user_id is not None
    options = ExportOptions(user_id=user_id, spam="include", labels=True, events=True)
    out = tmp_path / "user.jsonl.gz"
    export_to(sample, out, options)
    expected = model_lines(sample, options)
    assert expected and gzip.decompress(out.read_bytes()) == expected
    assert fallbacks == []


def unusual_trees() -> list[dict[str, Any]]:
    """Trees the line builder writes itself (odd text, dates, unknown fields) and some it leaves to the
    models (kept events, detoxify with extra or whole-number scores)."""
    odd = tree(
        "odd", CRITERIA={"nested": [1, 2.5, None, {"é": "\u2028"}]}, created_date="2023-02-12T19:06:16+00:00"
    )
    odd["prompt"]["text"] = 'line\nbreak "quoted" \\ \t \x01 é 🙂 \u2028'
    odd["prompt"]["emojis"] = {"+1": 1, "🙂": 3, 'quo"te': 2}
    odd["release"] = {"version": 2}
    kept = tree("kept")
    kept["prompt"]["events"] = {
        "rating": [{"type": "rating", "rating": "5", "user_id": "someone", "why": "x"}]
    }
    detox = {"toxicity": 0.5, "severe_toxicity": 0, "obscene": 1e-07, "identity_attack": 0.25}
    detox |= {"insult": 0.0, "threat": 1.5e-05, "sexual_explicit": 0.125}
    whole = tree("whole")  # gets detoxify with a whole number below
    extra_field = tree("extra", detoxify={**detox, "severe_toxicity": 0.5, "new_score": 1})
    plain_detox = tree("plain", detoxify={**detox, "severe_toxicity": 0.5})
    ranked = tree("ranked")
    ranked["prompt"]["events"] = {
        "ranking": [
            {
                "type": "ranking",
                "user_id": "u1",
                "ranking": [1, 0],
                "ranked_message_ids": ["ranked-a3", "ranked-a1"],
                "ranking_parent_id": "ranked-r",
                "message_tree_id": "ranked-r",
                "not_rankable": None,
            }
        ],
        "emoji": [{"type": "emoji", "user_id": None, "emoji": "+1"}],
    }
    labelled = tree(
        "labelled", labels={"spam": {"value": 0.1, "count": 3}, "quality": {"value": 1e-07, "count": 2}}
    )
    return [odd, kept, whole, extra_field, plain_detox, ranked, labelled]


def test_unusual_data_gives_the_models_lines(
    database: Database, settings: Settings, tmp_path: Path, fallbacks: list[Any]
) -> None:
    import_files(database, [write_jsonl(tmp_path / "odd.jsonl", unusual_trees())], cfg=settings.tree_manager)
    messages, states = TABLES["message"], TABLES["message_tree_state"]

    def tamper(session: Any) -> None:
        # stored as no import writes it: numbers pydantic coerces, a tree field in a tree's extra
        session.execute(
            update(messages).where(messages.c.text == "text of odd-a3").values(emojis={"+1": 2.0})
        )
        detoxify = {"detoxify": {name: 0 for name in ("toxicity", "severe_toxicity", "obscene", "threat")}}
        detoxify["detoxify"] |= {"identity_attack": 0.5, "insult": 0.5, "sexual_explicit": 0.5}
        session.execute(update(messages).where(messages.c.text == "text of whole-r").values(extra=detoxify))
        origin = {"origin": "from extra", "_oasst_ids": {"message_tree_id": "odd-r"}}
        odd = states.c.message_tree_id == exported_to_uuid("odd-r", "message")
        session.execute(update(states).where(odd).values(extra=origin))

    database.write(tamper)
    for options in (EVERYTHING, replace(EVERYTHING, anonymizer_seed=7), replace(EVERYTHING, batch_trees=1)):
        fallbacks.clear()
        assert_same_lines(model_lines(database, options), fast_lines(database, options))
        left = {getattr(item, "message_tree_id", None) for item in fallbacks}
        assert len(left) == 4  # kept events, detoxify with 0 and with an extra score, odd's origin in extra


def test_data_the_models_reject_is_rejected(database: Database) -> None:
    client = database.write(lambda s: make_client(s, trusted=True))
    user = database.write(lambda s: make_db_user(s, client))
    found = database.write(lambda s: make_tree(s, client, user, shape=[[]]))
    messages = TABLES["message"]
    database.write(
        lambda s: s.execute(update(messages).where(messages.c.id == found.id).values(role="robot"))
    )
    options = replace(EVERYTHING, labels=False)
    with pytest.raises(ValidationError):
        model_lines(database, options)
    with pytest.raises(ValidationError):
        fast_lines(database, options)


# ---------------------------------------------------------------------------------------------------
# label sums in SQL (PostgreSQL)


def batches(database: Database, options: ExportOptions, *, sql: bool) -> list[Batch]:
    found = []
    with BatchReader(database.engine, options) as reader:
        reader.sql_labels = reader.sql_labels and sql
        batch = reader.read(None)
        while batch is not None:
            found.append(batch)
            batch = reader.read(batch.trees[-1].tree_id)
    return found


def averages(found: list[Batch]) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        row[0]: label_averages(batch, row[0])
        for batch in found
        for rows in batch.messages.values()
        for row in rows
    }


def label_rows(database: Database, labels: dict[uuid.UUID, list[dict[str, Any]]]) -> None:
    client = database.write(lambda s: make_client(s, trusted=True)).id
    rows = [
        {
            "id": uuid.uuid4(),
            "api_client_id": client,
            "message_id": message_id,
            "labels": values,
            "task_id": None,
        }
        for message_id, reviews in labels.items()
        for values in reviews
    ]
    database.write(lambda s: s.execute(insert(TABLES["text_labels"]), rows))


def labelled_trees(database: Database, trees: int) -> list[uuid.UUID]:
    client = database.write(lambda s: make_client(s, trusted=True))
    user = database.write(lambda s: make_db_user(s, client))
    made = [database.write(lambda s: make_tree(s, client, user, shape=[[[]], []])) for _ in range(trees)]
    return [message.id for made_tree in made for message in made_tree.messages]


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[Database]:
    """The label sums are computed in SQL on PostgreSQL only: these tests run there alone."""
    db = Database(make_engine(make_test_settings(postgres_url)))
    truncate_tables(db.engine)
    yield db
    truncate_tables(db.engine)
    db.dispose()


def test_sql_label_averages_equal_the_python_ones(pg_database: Database) -> None:
    database = pg_database
    rng = random.Random(3)
    names = ["spam", "quality", "pii", "a", "ünïcode", "toxicity", "50%", 'we"i:r\\d']
    message_ids = labelled_trees(database, 12)
    reviews: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for i, message_id in enumerate(message_ids):
        # names appear batch by batch (the later trees bring new ones); counts and magnitudes vary
        pool = names[: 3 + i * len(names) // len(message_ids)]
        reviews[message_id] = [
            {
                name: rng.choice(
                    [0, 1, 0.25, 0.1, 1 / 3, rng.random(), rng.uniform(-1e6, 1e6), 1e-9 * rng.random()]
                )
                for name in rng.sample(pool, rng.randint(1, len(pool)))
            }
            for _ in range(rng.randint(0, 5))
        ]
    label_rows(database, reviews)
    options = replace(EVERYTHING, batch_trees=3)
    in_sql, in_python = batches(database, options, sql=True), batches(database, options, sql=False)
    assert all(batch.label_sums and not batch.label_values for batch in in_sql)
    assert all(batch.label_values and not batch.label_sums for batch in in_python)
    sql_averages, python_averages = averages(in_sql), averages(in_python)
    assert sql_averages.keys() == {str(m) for m in message_ids}
    for message_id, expected in python_averages.items():
        found = sql_averages[message_id]
        assert list(found) == list(expected), message_id  # the same names in the same (jsonb) order
        for name, label in expected.items():
            assert found[name]["count"] == label["count"]
            assert math.isclose(found[name]["value"], label["value"], rel_tol=1e-9, abs_tol=1e-9)
    assert_same_lines(model_lines(database, options), fast_lines(database, options))


def test_labels_that_are_not_numbers_take_the_python_path(pg_database: Database) -> None:
    database = pg_database
    message_ids = labelled_trees(database, 2)
    label_rows(database, {message_ids[0]: [{"spam": True, "quality": 0.5}, {"spam": 0.5}]})
    found = batches(database, EVERYTHING, sql=True)
    assert all(not batch.label_sums for batch in found)
    assert averages(found)[str(message_ids[0])] == {
        "spam": {"value": 0.75, "count": 2},
        "quality": {"value": 0.5, "count": 1},
    }
    label_rows(database, {message_ids[1]: [{"spam": "high"}]})
    with pytest.raises(TypeError):  # as before: a string is no label value
        fast_lines(database, EVERYTHING)


def test_too_many_label_names_take_the_python_path(pg_database: Database) -> None:
    database = pg_database
    message_ids = labelled_trees(database, 1)
    label_rows(database, {message_ids[0]: [{f"label{i}": i / 7 for i in range(70)}]})
    found = batches(database, EVERYTHING, sql=True)
    assert all(not batch.label_sums for batch in found)
    assert averages(found)[str(message_ids[0])]["label9"] == {"value": 9 / 7, "count": 1}
