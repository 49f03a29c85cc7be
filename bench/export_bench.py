"""Benchmark of ``oasst export``: messages per second, CPU time and peak memory, on PostgreSQL.

Builds N messages (default 150,000 in ~10,000 trees of 15, three label reviews per message, emojis, and
three ranking ballots per parent with several assistant replies) in a fresh PostgreSQL database with Core
executemany, then exports them four times: plain and with labels and events, each to a temporary
``.jsonl`` and ``.jsonl.gz``; then imports the labels-and-events ``.jsonl.gz`` into another fresh database
(``oasst import``'s path, checking the file first). Each export and the import run in a child process that
reports its wall time, its CPU time and its peak RSS (``getrusage``), so the figures are those of the
export or import alone; the database server's CPU is not counted. Run it with ``--messages 1000000`` beside
the default to see that memory stays flat as the data grows. With ``--repeat`` each export runs several times and the median run is shown (other
processes on the machine move the wall-clock figures; CPU seconds move less). The original backend's
published figures (``.gz``) are printed beside them.

    python bench/export_bench.py                      # 150,000 messages, temp database on localhost
    python bench/export_bench.py --messages 20000     # a quick check
    python bench/export_bench.py --messages 1000000   # memory at a million messages (~15 minutes)
    python bench/export_bench.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/mydb
    python bench/export_bench.py --database-url ... --skip-build --repeat 3 --gzip-level 6
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.engine import make_url

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TREE_SHAPE: list[Any] = [[[[[]], [[]]]], [[[[]]]], [[[[]]]]]  # 15 messages: the replies of each node, nested
LABELS = ["spam", "lang_mismatch", "quality", "creativity", "humor", "toxicity", "violence"]
LABELS += ["not_appropriate", "pii", "hate_speech", "sexual_content", "fails_task", "helpfulness"]
EMOJIS = ["+1", "-1", "red_flag", "_skip_reply", "_skip_ranking", "heart_eyes"]
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "it",
    "at",
    "from",
    "this",
    "be",
    "are",
    "or",
    "an",
    "have",
    "not",
]
ORIGINAL = {"plain": (42.0, None), "labels+events": (184.0, 2.15 * 1024)}  # 150k messages: s, MiB


@contextmanager
def temp_database(server_url: str) -> Iterator[str]:
    """A fresh database on the server, dropped at the end."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"oasst_export_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Builder:
    """Generates the rows of one tree at a time and inserts them in batches with Core executemany."""

    def __init__(self, engine: Engine, users: int, seed: int) -> None:
        from oasst.backend.models import Base

        tables = Base.metadata.tables

        self.engine = engine
        self.rng = random.Random(seed)
        self.tables = {
            "message": tables["message"],
            "state": tables["message_tree_state"],
            "labels": tables["text_labels"],
            "emojis": tables["message_emoji"],
            "reactions": tables["message_reaction"],
        }
        self.client = uuid.uuid4()
        self.users = [uuid.uuid4() for _ in range(users)]
        self.start = datetime(2023, 2, 1, tzinfo=UTC)
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in self.tables}
        with engine.begin() as conn:
            conn.execute(
                insert(tables["api_client"]).values(
                    id=self.client,
                    api_key_hash=uuid.uuid4().hex,
                    description="bench",
                    enabled=True,
                    trusted=True,
                    created_date=self.start,
                )
            )
            conn.execute(
                insert(tables["user"]),
                [
                    {
                        "id": u,
                        "username": f"user-{i}",
                        "auth_method": "local",
                        "display_name": f"User {i}",
                        "api_client_id": self.client,
                        "enabled": True,
                        "deleted": False,
                        "notes": "",
                        "show_on_leaderboard": True,
                        "created_date": self.start,
                    }
                    for i, u in enumerate(self.users)
                ],
            )

    def text(self) -> str:
        return " ".join(self.rng.choices(WORDS, k=self.rng.randint(10, 150)))

    def tree(self, n: int) -> int:
        """Add tree number n; return its message count."""
        root = uuid.uuid4()
        created = self.start + timedelta(minutes=n)
        count = self._message(root, None, root, 0, TREE_SHAPE, created)
        self.rows["state"].append(
            {
                "message_tree_id": root,
                "goal_tree_size": 15,
                "max_depth": 5,
                "max_children_count": 3,
                "state": "ready_for_export",
                "active": False,
                "origin": None,
                "won_prompt_lottery_date": created,
                "lang": "en",
                "created_date": created,
                "extra": None,
            }
        )
        return count

    def _message(
        self,
        mid: uuid.UUID,
        parent: uuid.UUID | None,
        root: uuid.UUID,
        depth: int,
        shape: list[Any],
        created: datetime,
    ) -> int:
        children = [uuid.uuid4() for _ in shape]
        self.rows["message"].append(
            {
                "id": mid,
                "parent_id": parent,
                "message_tree_id": root,
                "task_id": None,
                "user_id": self.rng.choice(self.users),
                "role": "prompter" if depth % 2 == 0 else "assistant",
                "api_client_id": self.client,
                "frontend_message_id": mid.hex,
                "created_date": created,
                "text": self.text(),
                "lang": "en",
                "depth": depth,
                "children_count": len(shape),
                "deleted": False,
                "review_count": 3,
                "review_result": True,
                "ranking_count": 3 if depth else 0,
                "rank": None,
                "synthetic": False,
                "edited": False,
                "model_name": None,
                "emojis": {"+1": 2},
                "extra": None,
            }
        )
        self._reviews(mid, created)
        if len(children) > 1:
            self._ballots(mid, root, children, created)
        count = 1
        for i, (child, sub) in enumerate(zip(children, shape, strict=True)):
            count += self._message(child, mid, root, depth + 1, sub, created + timedelta(seconds=i + 1))
        return count

    def _reviews(self, mid: uuid.UUID, created: datetime) -> None:
        for reviewer in self.rng.sample(
            self.users, 3
        ):  # one review per user and message, as the backend enforces
            self.rows["labels"].append(
                {
                    "id": uuid.uuid4(),
                    "user_id": reviewer,
                    "created_date": created,
                    "api_client_id": self.client,
                    "text": None,
                    "message_id": mid,
                    "task_id": uuid.uuid4(),
                    "labels": {k: self.rng.choice((0.0, 0.25, 0.5, 0.75, 1.0)) for k in LABELS},
                    "is_report": False,
                }
            )
        for user in self.rng.sample(self.users, self.rng.randint(0, 2)):
            self.rows["emojis"].append(
                {
                    "message_id": mid,
                    "user_id": user,
                    "emoji": self.rng.choice(EMOJIS),
                    "created_date": created,
                }
            )

    def _ballots(
        self, parent: uuid.UUID, root: uuid.UUID, children: list[uuid.UUID], created: datetime
    ) -> None:
        for user in self.rng.sample(self.users, 3):
            order = self.rng.sample(range(len(children)), len(children))
            payload = {
                "type": "message_ranking",
                "ranking": order,
                "ranked_message_ids": [str(children[i]) for i in order],
                "ranking_parent_id": str(parent),
                "message_tree_id": str(root),
                "not_rankable": False,
            }
            self.rows["reactions"].append(
                {
                    "task_id": uuid.uuid4(),
                    "user_id": user,
                    "created_date": created,
                    "payload_type": "RankingReactionPayload",
                    "payload": payload,
                    "api_client_id": self.client,
                    "message_id": parent,
                }
            )

    def flush(self) -> None:
        with self.engine.begin() as conn:
            for name in ("message", "state", "labels", "emojis", "reactions"):
                if self.rows[name]:
                    conn.execute(insert(self.tables[name]), self.rows[name])
                self.rows[name] = []


def build(url: str, messages: int, seed: int) -> tuple[int, int]:
    from oasst.backend.migrate import upgrade

    engine = create_engine(url)
    upgrade(engine)
    builder = Builder(engine, users=max(100, messages // 150), seed=seed)
    trees = count = 0
    while count < messages:
        count += builder.tree(trees)
        trees += 1
        if trees % 200 == 0:
            builder.flush()
    builder.flush()
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return trees, count


def _measured(url: str, run: Callable[[Any, Any], Any], path: str) -> None:
    """Run ``run(database, settings)`` (an export or an import, in this child process) and print its
    summary with the process's CPU time and peak RSS, its connections' CPU and the file's size, as JSON."""
    from oasst.backend.db import Database, make_engine
    from oasst.backend.settings import Settings

    settings = Settings(database_url=url)
    database = Database(make_engine(settings))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before, cpu_before = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    summary = run(database, settings)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime - cpu_before
    db_cpu = database_cpu(database.engine)
    database.dispose()
    figures = {"trees": summary.trees, "messages": summary.messages, "seconds": summary.seconds}
    figures |= {"cpu_seconds": cpu, "db_cpu_seconds": db_cpu, "peak_rss_mib": peak / 1024}
    figures |= {"rss_before_mib": before / 1024, "bytes": os.path.getsize(path)}
    print(json.dumps(figures))


def child_export(url: str, out: str, labels_and_events: bool, gzip_level: int) -> None:
    """Run one export in this (child) process and print its figures as JSON."""
    from oasst.backend.services.export import ExportOptions, export_to

    options = ExportOptions(labels=labels_and_events, events=labels_and_events, gzip_level=gzip_level)
    _measured(url, lambda database, _settings: export_to(database, out, options), out)


def child_import(url: str, path: str) -> None:
    """Run one import of ``path`` into the (empty, migrated) database in this child process; print figures."""
    from oasst.backend.services.importer import import_files

    _measured(url, lambda database, settings: import_files(database, [path], cfg=settings.tree_manager), path)


def _child(*args: str) -> dict[str, Any]:
    """Run this script as a child with ``args``; its figures (the last line it prints)."""
    result = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _export_args(url: str, out: str, labels_and_events: bool, gzip_level: int) -> list[str]:
    args = ["--child-export", out, "--database-url", url, "--gzip-level", str(gzip_level)]
    return args + (["--labels-and-events"] if labels_and_events else [])


def run_import(server_url: str, labels_and_events: bool, gzip_level: int, source_url: str) -> dict[str, Any]:
    """Export the built data to a .jsonl.gz, then import that file into a fresh database on the server."""
    from oasst.backend.migrate import upgrade

    with tempfile.TemporaryDirectory() as tmp, temp_database(server_url) as url:
        out = os.path.join(tmp, "export.jsonl.gz")
        _child(*_export_args(source_url, out, labels_and_events, gzip_level))
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        return _child("--child-import", out, "--database-url", url)


def database_cpu(engine: Engine) -> float | None:
    """CPU seconds of the server processes of the export's pooled connections (all opened by the export),
    where the server runs on this machine; None elsewhere."""
    try:
        with engine.connect() as conn:
            query = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"
            pids = list(conn.execute(text(query)).scalars())
        ticks = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def run_export(
    url: str, labels_and_events: bool, suffix: str, gzip_level: int, repeat: int
) -> dict[str, Any]:
    """The median (by wall time) of ``repeat`` runs of one export."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(
                _child(
                    *_export_args(url, os.path.join(tmp, f"export{suffix}"), labels_and_events, gzip_level)
                )
            )
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def report(results: dict[str, dict[str, Any]], gzip_level: int) -> None:
    """A small table beside the original's published figures (150k messages, same kind of machine)."""
    first = next(iter(results.values()))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{first['messages']:,} messages in {first['trees']:,} trees, PostgreSQL, {os.cpu_count()} CPUs")
    print(f"(load average {load}: other processes on the machine slow the wall-clock figures)\n")
    head = f"{'run':<33}{'seconds':>9}{'msgs/s':>9}{'CPU s':>8}{'msgs/CPU-s':>12}{'DB CPU s':>10}"
    head += f"{'peak RSS MiB':>14}{'file MiB':>10}"
    print(f"{head}   original (150k msgs, .gz)")
    for name, r in results.items():
        db_cpu = "?" if r.get("db_cpu_seconds") is None else f"{r['db_cpu_seconds']:.1f}"
        original = ""
        if name.split()[0] in ORIGINAL:
            seconds, rss = ORIGINAL[name.split()[0]]
            original = f"{seconds:.0f} s ({150_000 / seconds:,.0f} msgs/s)" + (
                f", {rss:,.0f} MiB" if rss else ""
            )
        print(
            f"{name:<33}{r['seconds']:>9.1f}{r['messages'] / r['seconds']:>9,.0f}{r['cpu_seconds']:>8.1f}"
            f"{r['messages'] / r['cpu_seconds']:>12,.0f}{db_cpu:>10}"
            f"{r['peak_rss_mib']:>14.0f}{r['bytes'] / 2**20:>10.1f}"
            f"   {original}"
        )
    print(
        "\nCPU s is the export's (import's) process's own; DB CPU s its database connections' (where the server is "
        "local). The import reads the labels+events .jsonl.gz into a fresh database, checking the file first. "
        "Peak RSS is the whole "
        f"process, Python and the drivers included ({first['rss_before_mib']:.0f} MiB before the export began). "
        f".gz at level {gzip_level}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=150_000)
    parser.add_argument(
        "--database-url", help="an existing empty database (default: a temp one on localhost)"
    )
    parser.add_argument("--skip-build", action="store_true", help="export what an earlier run built there")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per export; the median is shown")
    parser.add_argument("--gzip-level", type=int, default=1, help="compression of the .gz exports (1-9)")
    parser.add_argument("--no-import", action="store_true", help="skip the import run")
    parser.add_argument("--child-export", help=argparse.SUPPRESS)
    parser.add_argument("--child-import", help=argparse.SUPPRESS)
    parser.add_argument("--labels-and-events", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_export:
        child_export(args.database_url, args.child_export, args.labels_and_events, args.gzip_level)
        return
    if args.child_import:
        child_import(args.database_url, args.child_import)
        return
    if args.skip_build and not args.database_url:
        parser.error("--skip-build needs --database-url")

    def bench(url: str) -> None:
        if not args.skip_build:
            started = time.perf_counter()
            trees, count = build(url, args.messages, args.seed)
            print(
                f"built {count:,} messages in {trees:,} trees in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        results = {}
        for name, labels_and_events in (("plain", False), ("labels+events", True)):
            for suffix in (".jsonl", ".jsonl.gz"):
                results[f"{name} {suffix}"] = run_export(
                    url, labels_and_events, suffix, args.gzip_level, args.repeat
                )
        if not args.no_import:
            server = make_url(url).set(database="postgres").render_as_string(hide_password=False)
            results["import labels+events .jsonl.gz"] = run_import(server, True, args.gzip_level, url)
        report(results, args.gzip_level)

    if args.database_url:
        bench(args.database_url)
    else:
        with temp_database(SERVER) as url:
            bench(url)


if __name__ == "__main__":
    main()
