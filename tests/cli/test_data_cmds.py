"""``oasst export`` and ``oasst import`` on a temporary SQLite database, through the command line."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
import typer
from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner

from oasst.backend.migrate import upgrade
from oasst.backend.models import Message
from oasst.cli import data_cmds
from oasst.data import iter_messages, read_message_trees
from tests.conftest import sample_missing

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "oasst2_sample.trees.jsonl"
runner = CliRunner(env={"COLUMNS": "1000"})  # wide: no wrapped paths in messages


def cli() -> typer.Typer:
    """The real ``oasst`` app once it registers these commands; until then, an app of our own."""
    from oasst.cli.main import app

    if {"export", "import"} <= {c.name for c in app.registered_commands}:
        return app
    own = typer.Typer()

    @own.callback()
    def _root() -> None:
        """oasst (test)"""

    data_cmds.register(own)
    return own


@pytest.fixture(autouse=True)
def _no_oasst_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OASST_"):
            monkeypatch.delenv(name)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'oasst.db'}"
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def flat(output: str) -> str:
    """Rich wraps long lines to the terminal width; join them back."""
    return " ".join(output.split())


def messages_in(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(Message)).scalar_one()
    engine.dispose()
    return int(count)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "export",
            [
                "--state",
                "--lang",
                "--deleted",
                "--spam",
                "--synthetic",
                "--user",
                "--from",
                "--to",
                "--prompts-only",
                "--limit",
                "--export-labels",
                "--export-events",
                "--anonymizer-seed",
                "--gzip-level",
                "--output",
            ],
        ),
        ("import", ["--origin", "--state", "--synthetic", "--model-name", "--no-validate", "--database-url"]),
    ],
)
def test_help(command: str, expected: list[str]) -> None:
    result = runner.invoke(cli(), [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in expected:
        assert option in result.output


def test_round_trip_through_the_command_line(db_url: str, tmp_path: Path) -> None:
    if not SAMPLE.exists():
        sample_missing("the oasst2 sample")
    result = runner.invoke(cli(), ["import", str(SAMPLE), "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert "Imported 520 trees (1,500 messages)" in flat(result.output)
    assert "Skipped 31 trees" in flat(result.output)

    out = tmp_path / "all.jsonl.gz"
    args = [
        "export",
        "-o",
        str(out),
        "--state",
        "all",
        "--deleted",
        "include",
        "--spam",
        "include",
        "--synthetic",
        "include",
        "--export-labels",
        "--database-url",
        db_url,
    ]
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0, result.output
    assert "Exported 520 trees (1,500 messages)" in flat(result.output)
    trees = list(read_message_trees(out))
    assert len(trees) == 520 and sum(1 for t in trees for _ in iter_messages(t)) == 1500
    assert all(t.origin == SAMPLE.name for t in trees)

    again = runner.invoke(cli(), ["import", str(out), "--database-url", db_url])
    assert again.exit_code == 0, again.output
    assert "Imported 0 trees" in flat(again.output) and "Skipped 520 trees" in flat(again.output)
    assert messages_in(db_url) == 1500


def test_export_to_stdout_anonymised_and_flat(db_url: str, tmp_path: Path) -> None:
    if not SAMPLE.exists():
        sample_missing("the oasst2 sample")
    runner.invoke(cli(), ["import", str(SAMPLE), "--database-url", db_url])
    result = runner.invoke(
        cli(), ["export", "--anonymizer-seed", "7", "--limit", "3", "--database-url", db_url]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3 and all(len(tree["message_tree_id"]) == 64 for tree in lines)

    user = "028c7074-4436-4ebc-a3be-7185f2c852b7"  # wrote the sample's first prompt
    result = runner.invoke(cli(), ["export", "--user", user, "--spam", "include", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows and {row["user_id"] for row in rows} == {user} and all(row["replies"] is None for row in rows)

    result = runner.invoke(cli(), ["export", "--user", "nobody", "--database-url", db_url])
    assert result.exit_code == 1 and "There is no user 'nobody'" in flat(result.output)


def test_gzip_levels_compress_the_same_lines(db_url: str, tmp_path: Path) -> None:
    if not SAMPLE.exists():
        sample_missing("the oasst2 sample")
    runner.invoke(cli(), ["import", str(SAMPLE), "--database-url", db_url])
    files = {}
    for level in ("1", "9"):
        files[level] = tmp_path / f"level{level}.jsonl.gz"
        args = ["export", "-o", str(files[level]), "--export-labels", "--gzip-level", level]
        result = runner.invoke(cli(), [*args, "--database-url", db_url])
        assert result.exit_code == 0, result.output
    fast, small = (files[level].read_bytes() for level in ("1", "9"))
    assert gzip.decompress(fast) == gzip.decompress(small) and len(small) < len(fast)
    result = runner.invoke(cli(), ["export", "--gzip-level", "0", "--database-url", db_url])
    assert result.exit_code == 2


def test_a_bad_file_is_refused_and_nothing_is_written(db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl.gz"
    good_tree = {
        "message_tree_id": "t",
        "tree_state": "growing",
        "prompt": {"message_id": "t", "text": "hello", "role": "prompter", "replies": []},
    }
    bad.write_bytes(gzip.compress((json.dumps(good_tree) + "\n{oops\n").encode()))
    result = runner.invoke(cli(), ["import", str(bad), "--database-url", db_url])
    assert result.exit_code == 1
    # Rich may wrap the long temporary path anywhere (CI has no terminal): compare without whitespace
    assert "bad.jsonl.gz:2:invalidJSON" in "".join(result.output.split())
    assert messages_in(db_url) == 0


def test_unknown_states_are_refused(db_url: str) -> None:
    result = runner.invoke(cli(), ["export", "--state", "finished", "--database-url", db_url])
    assert result.exit_code == 1 and "Unknown tree state 'finished'" in flat(result.output)
    result = runner.invoke(cli(), ["import", str(SAMPLE), "--state", "done", "--database-url", db_url])
    assert result.exit_code == 1 and "Unknown tree state 'done'" in flat(result.output)


def test_commands_need_a_migrated_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    create_engine(url).connect().close()
    result = runner.invoke(cli(), ["export", "--database-url", url])
    assert result.exit_code == 1 and "oasst db upgrade" in flat(result.output)
