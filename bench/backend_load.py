"""Load benchmark of the backend's task protocol: simulated volunteers against a running server.

Starts ``oasst``'s backend with uvicorn on a fresh PostgreSQL database (small trees: goal size 5,
2 reviews, 2 rankings, 2 children), drives N concurrent volunteers doing request -> ack -> interaction
(random task type) for a bounded time, and prints completed cycles per second and p50/p95/p99
latency per call. Runs every user count with one server process and with the default process count
(one per CPU), so the figures compare in one run. The original backend's figures, measured on this
kind of machine with the same settings, are printed beside them.

    python bench/backend_load.py                       # 8 and 32 users, 30 s each, 1 and N processes
    python bench/backend_load.py --users 32 --duration 45 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from rawhttp import RawJsonClient

ORIGINAL = {  # the original backend, one process (reference notes §13): cycles/s and request p99 ms
    1: ("11.4", "47"),
    8: ("17.0", "388"),
    32: ("13.9", "1978"),
}
TREE_ENV = {
    "OASST_TREE_MANAGER__GOAL_TREE_SIZE": "5",
    "OASST_TREE_MANAGER__MAX_CHILDREN_COUNT": "2",
    "OASST_TREE_MANAGER__NUM_REVIEWS_INITIAL_PROMPT": "2",
    "OASST_TREE_MANAGER__NUM_REVIEWS_REPLY": "2",
    "OASST_TREE_MANAGER__NUM_REQUIRED_RANKINGS": "2",
    "OASST_TREE_MANAGER__MAX_ACTIVE_TREES": "10",
    # the limiter stays on (its cost is measured) with limits that never trigger
    "OASST_RATE_LIMITS__USER_REQUESTS": "1000000",
    "OASST_RATE_LIMITS__ASSISTANT_REPLY_REQUESTS": "1000000",
    "OASST_RATE_LIMITS__PROMPTER_REPLY_REQUESTS": "1000000",
    "OASST_ENFORCE_TOS_ACCEPTANCE": "false",
}


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cycles: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    task_types: Counter[str] = field(default_factory=Counter)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_database(server_url: str) -> tuple[str, str]:
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"oasst_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False), name


def drop_database(server_url: str, name: str) -> None:
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def start_server(
    database_url: str, port: int, workers: int, api_key: str, redis_url: str | None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **TREE_ENV,
        "OASST_DATABASE_URL": database_url,
        "OASST_OFFICIAL_WEB_API_KEY": api_key,
        "OASST_ENVIRONMENT": "development",
    }
    if redis_url:
        env["OASST_REDIS_URL"] = redis_url
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "oasst.backend.app:create_app_from_env",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the server exited during startup")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start within 60 s")


def interaction(task: dict[str, Any], frontend_id: str, rng: random.Random) -> dict[str, Any]:
    kind = task["type"]
    if kind.startswith("rank_"):
        order = list(range(len(task["reply_messages"])))
        rng.shuffle(order)
        return {"type": "message_ranking", "message_id": frontend_id, "ranking": order}
    if kind.startswith("label_"):
        labels = {name: rng.random() for name in task["valid_labels"]}
        labels["spam"] = 1.0 if rng.random() < 0.05 else 0.0
        if "lang_mismatch" in labels:
            labels["lang_mismatch"] = 0.0
        return {
            "type": "text_labels",
            "message_id": task["message_id"],
            "task_id": task["id"],
            "labels": labels,
        }
    words = " ".join(rng.choice(["data", "tree", "model", "answer", "question", "kind"]) for _ in range(20))
    return {
        "type": "text_reply_to_message",
        "message_id": frontend_id,
        "user_message_id": f"msg-{frontend_id}",
        "text": f"{words} {uuid.uuid4()}",
        "lang": "en",
    }


async def volunteer(base: tuple[str, int], api_key: str, n: int, stop_at: float, stats: Stats) -> None:
    rng = random.Random(n)
    user = {"id": f"bench-{n}-{secrets.token_hex(3)}", "display_name": f"Bench {n}", "auth_method": "local"}
    http = RawJsonClient(*base, headers={"X-API-Key": api_key})

    async def call(name: str, url: str, body: Any) -> tuple[int, Any]:
        start = time.perf_counter()
        response = await http.post(url, body)
        stats.latencies[name].append(time.perf_counter() - start)
        return response

    try:
        while time.monotonic() < stop_at:
            cycle_start = time.perf_counter()
            status, task = await call(
                "request", "/api/v1/tasks/", {"type": "random", "user": user, "lang": "en"}
            )
            if status != 200:
                stats.errors[f"request:{task.get('error_code')}"] += 1
                await asyncio.sleep(0.05)
                continue
            frontend_id = uuid.uuid4().hex
            status, body = await call("ack", f"/api/v1/tasks/{task['id']}/ack", {"message_id": frontend_id})
            if status != 204:
                stats.errors[f"ack:{body.get('error_code')}"] += 1
                continue
            answer = {**interaction(task, frontend_id, rng), "user": user}
            status, body = await call("interaction", "/api/v1/tasks/interaction", answer)
            if status != 200:
                stats.errors[f"interaction:{body.get('error_code')}"] += 1
                continue
            stats.latencies["cycle"].append(time.perf_counter() - cycle_start)
            stats.task_types[task["type"]] += 1
            stats.cycles += 1
    finally:
        await http.close()


async def drive(port: int, api_key: str, users: int, duration: float) -> tuple[Stats, float]:
    stats = Stats()
    start = time.monotonic()
    await asyncio.gather(
        *(volunteer(("127.0.0.1", port), api_key, i, start + duration, stats) for i in range(users))
    )
    return stats, time.monotonic() - start


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU seconds of these processes (from /proc; 0 where unreadable)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def server_pids(root: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(root)], capture_output=True, text=True).stdout.split()
    return [root, *map(int, children)]


def postgres_pids() -> list[int]:
    return [
        int(p)
        for p in subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout.split()
    ]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(label: str, users: int, stats: Stats, elapsed: float, cpu: dict[str, float]) -> None:
    rate = stats.cycles / elapsed
    print(f"\n{label}, {users} users: {stats.cycles} cycles in {elapsed:.1f} s = {rate:.1f} cycles/s")
    if stats.cycles:
        per_cycle = ", ".join(
            f"{name} {1000 * seconds / stats.cycles:.1f} ms" for name, seconds in cpu.items()
        )
        print(f"  CPU per cycle: {per_cycle}")
    original = ORIGINAL.get(users)
    if original:
        print(f"  original backend (1 process): {original[0]} cycles/s, request p99 {original[1]} ms")
    print(f"  {'call':<12} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name in ("request", "ack", "interaction", "cycle"):
        values = stats.latencies.get(name, [])
        mean = 1000 * statistics.fmean(values) if values else float("nan")
        print(
            f"  {name:<12} {len(values):>6} {pct(values, 0.5):>8.1f} {pct(values, 0.95):>8.1f} {pct(values, 0.99):>8.1f} {mean:>8.1f}"
        )
    print(f"  task types: {dict(stats.task_types)}")
    if stats.errors:
        print(f"  errors (call:error_code): {dict(stats.errors)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default=None, help="Redis URL for the rate limiter (default: in memory)")
    args = parser.parse_args()
    api_key = secrets.token_urlsafe(24)
    for workers in dict.fromkeys(args.workers):
        for users in args.users:
            database_url, name = fresh_database(args.postgres)
            port = free_port()
            server = start_server(database_url, port, workers, api_key, args.redis)
            pids = server_pids(server.pid)
            before = {
                "server": cpu_seconds(pids),
                "postgres": cpu_seconds(postgres_pids()),
                "load generator": cpu_seconds([os.getpid()]),
            }
            try:
                stats, elapsed = asyncio.run(drive(port, api_key, users, args.duration))
                cpu = {
                    "server": cpu_seconds(pids) - before["server"],
                    "postgres": cpu_seconds(postgres_pids()) - before["postgres"],
                    "load generator": cpu_seconds([os.getpid()]) - before["load generator"],
                }
            finally:
                server.send_signal(signal.SIGINT)
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
                drop_database(args.postgres, name)
            report(
                f"oasst, {workers} server process{'es' if workers > 1 else ''}", users, stats, elapsed, cpu
            )


if __name__ == "__main__":
    main()
