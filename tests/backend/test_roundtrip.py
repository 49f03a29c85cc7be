"""The headline property: the oasst2 sample, imported and exported again, comes back the same."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from oasst.backend.db import Database
from oasst.backend.services.export import ExportOptions, export_to
from oasst.backend.services.importer import import_files
from oasst.backend.settings import Settings
from oasst.data import iter_messages, read_message_trees
from tests.conftest import sample_missing

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "oasst2_sample.trees.jsonl"
EVERYTHING = ExportOptions(
    states=("all",), deleted="include", spam="include", synthetic="include", labels=True, events=True
)


@pytest.fixture(scope="module")
def sample() -> dict[str, dict[str, Any]]:
    """The sample's trees by id. 31 ids appear twice (with different CRITERIA): the first one counts,
    as in the database, where the second copy is skipped as already imported."""
    if not SAMPLE.exists():
        sample_missing(f"the oasst2 sample at {SAMPLE}")
    trees: dict[str, dict[str, Any]] = {}
    with SAMPLE.open() as lines:
        for line in lines:
            tree = json.loads(line)
            trees.setdefault(tree["message_tree_id"], tree)
    return trees


def canonical(node: dict[str, Any]) -> dict[str, Any]:
    """Replies sorted by id: the sample's order of unranked siblings is arbitrary (see below)."""
    return {**node, "replies": sorted((canonical(r) for r in node["replies"]), key=lambda r: r["message_id"])}


def assert_same(expected: Any, actual: Any, where: str = "") -> None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        assert expected.keys() == actual.keys(), f"{where}: keys differ {expected.keys() ^ actual.keys()}"
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, list) and isinstance(actual, list):
        assert len(expected) == len(actual), f"{where}: {len(expected)} != {len(actual)} items"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same(e, a, f"{where}[{i}]")
    elif isinstance(expected, float) or isinstance(actual, float):
        assert math.isclose(expected, actual, rel_tol=0, abs_tol=1e-9), f"{where}: {expected} != {actual}"
    else:
        assert type(expected) is type(actual) and expected == actual, f"{where}: {expected!r} != {actual!r}"


def reply_order(node: dict[str, Any]) -> list[tuple[bool, int, str]]:
    return [(r["rank"] is None, r["rank"] or 0, r["created_date"]) for r in node["replies"]]


def test_the_sample_round_trips(
    database: Database, settings: Settings, sample: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    imported = import_files(database, [SAMPLE], cfg=settings.tree_manager)
    assert (imported.trees, imported.skipped, imported.messages) == (520, 31, 1500)

    out = tmp_path / "again.jsonl"
    exported = export_to(database, out, EVERYTHING)
    assert (exported.trees, exported.messages) == (520, 1500)

    seen = set()
    for line in out.read_text().splitlines():
        tree = json.loads(line)
        expected = sample[tree["message_tree_id"]]
        seen.add(tree["message_tree_id"])
        assert tree["origin"] == SAMPLE.name  # export fills origin; the sample's is null
        assert_same(
            {**expected, "origin": SAMPLE.name, "prompt": canonical(expected["prompt"])},
            {**tree, "prompt": canonical(tree["prompt"])},
            tree["message_tree_id"],
        )
        # replies come best rank first, unranked last, then oldest first
        stack = [tree["prompt"]]
        while stack:
            node = stack.pop()
            assert reply_order(node) == sorted(reply_order(node))
            stack.extend(node["replies"])
    assert seen == set(sample)


def test_the_default_export_of_the_sample_keeps_only_finished_accepted_trees(
    database: Database, settings: Settings, sample: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    import_files(database, [SAMPLE], cfg=settings.tree_manager)
    out = tmp_path / "default.jsonl.gz"
    export_to(database, out, ExportOptions())
    trees = list(read_message_trees(out))
    assert {t.message_tree_id for t in trees} == {
        tree_id for tree_id, tree in sample.items() if tree["tree_state"] == "ready_for_export"
    }
    messages = [m for t in trees for m in iter_messages(t)]
    assert all(m.review_result is True and m.deleted is False and m.labels is None for m in messages)
