"""Load benchmark of the website: signed-in people loading the dashboard, a task page and a tree view.

Starts ``oasst up`` (website + backend in one process) on a fresh PostgreSQL database, seeds trees with
``oasst simulate``, signs in N people through the development login, then lets each of them load pages
in a loop for a bounded time: the dashboard, a random task page (skipped afterwards, so tasks do not
pile up), and the tree view of a random message. Prints pages per second and p50/p95/p99 per page
kind, measured at the client on loopback (so: server time including the backend calls, plus a
loopback round trip). As a baseline in the same run it times the backend calls each page makes,
straight against the API, so the website's own share is visible.

    python bench/web_load.py                      # 16 people, 30 s
    python bench/web_load.py --users 16 --duration 45
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

TREE_ENV = {
    "OASST_TREE_MANAGER__GOAL_TREE_SIZE": "5",
    "OASST_TREE_MANAGER__MAX_CHILDREN_COUNT": "2",
    "OASST_TREE_MANAGER__NUM_REVIEWS_INITIAL_PROMPT": "2",
    "OASST_TREE_MANAGER__NUM_REVIEWS_REPLY": "2",
    "OASST_TREE_MANAGER__NUM_REQUIRED_RANKINGS": "2",
    "OASST_RATE_LIMITS__ENABLED": "false",
}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TASK_ID = re.compile(r'action="/tasks/([0-9a-f-]{36})/skip"')


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_site(database_url: str, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, **TREE_ENV, "OASST_DATABASE_URL": database_url}
    cmd = [sys.executable, "-m", "oasst.cli.main", "up", "--port", str(port), "--data-dir", str(data_dir),
           "--dev-login", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("oasst up exited during start-up")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("oasst up did not start within 60 s")


async def sign_in(client: httpx.AsyncClient, name: str) -> None:
    page = await client.get("/signin")
    token = CSRF.search(page.text)
    assert token, "no CSRF token on the sign-in page"
    await client.post("/signin/dev", data={"csrf_token": token.group(1), "username": name, "role": "general"})
    tos = await client.get("/tos")
    token = CSRF.search(tos.text)
    assert token
    answer = await client.post("/tos", data={"csrf_token": token.group(1), "next": "/dashboard"})
    answer.raise_for_status()


async def person(
    base: str,
    name: str,
    message_ids: list[str],
    until: float,
    times: dict[str, list[float]],
    errors: list[str],
) -> None:
    rng = random.Random(name)
    async with httpx.AsyncClient(base_url=base, follow_redirects=True, timeout=30) as client:
        await sign_in(client, name)
        while time.monotonic() < until:
            for kind in ("dashboard", "task page", "tree view"):
                url = {
                    "dashboard": "/dashboard",
                    "task page": "/tasks/random",
                    "tree view": f"/messages/{rng.choice(message_ids)}",
                }[kind]
                start = time.perf_counter()
                page = await client.get(url)
                elapsed = time.perf_counter() - start
                if page.status_code != 200:
                    errors.append(f"{kind}: {page.status_code}")
                    continue
                times[kind].append(elapsed)
                if kind == "task page":  # skip the task so the next visit gets a fresh one
                    task = TASK_ID.search(page.text)
                    token = CSRF.search(page.text)
                    if task and token:
                        await client.post(
                            f"/tasks/{task.group(1)}/skip",
                            data={"csrf_token": token.group(1), "reason": "benchmark"},
                            follow_redirects=False,
                        )


async def backend_baseline(
    base: str, api_key: str, message_ids: list[str], rounds: int
) -> dict[str, list[float]]:
    """The backend calls behind the pages, timed directly: what the website adds comes on top."""
    times: dict[str, list[float]] = defaultdict(list)
    headers = {"X-API-Key": api_key}
    user = {"id": "baseline", "display_name": "Baseline", "auth_method": "local"}
    async with httpx.AsyncClient(base_url=base + "/api/v1", headers=headers, timeout=30) as api:
        await api.post("/frontend_users/", json={**user, "tos_acceptance": True})
        for _ in range(rounds):
            start = time.perf_counter()
            await api.post("/tasks/availability", json=user, params={"lang": "en"})
            times["availability (dashboard)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            await api.get(f"/messages/{random.choice(message_ids)}/tree")
            times["tree (tree view)"].append(time.perf_counter() - start)
    return times


def report(title: str, times: dict[str, list[float]], duration: float | None = None) -> None:
    print(f"\n{title}")
    print(f"{'page':<26}{'count':>7}{'per s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for kind, values in times.items():
        rate = f"{len(values) / duration:8.1f}" if duration else f"{'':>8}"
        print(
            f"{kind:<26}{len(values):>7}{rate}{1000 * statistics.median(values):>9.1f}"
            f"{1000 * percentile(values, 0.95):>9.1f}{1000 * percentile(values, 0.99):>9.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--seed-trees", type=int, default=6, help="trees to grow to ready before measuring")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "OASST_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()

    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    name = f"oasst_webbench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        proc = start_site(database_url, Path(data_dir), port)
        try:
            api_key = (Path(data_dir) / "api_key").read_text().strip()
            print(f"seeding {args.seed_trees} ready trees with oasst simulate ...")
            subprocess.run(
                [sys.executable, "-m", "oasst.cli.main", "simulate", "--url", base, "--api-key", api_key,
                 "--users", "6", "--until-ready", str(args.seed_trees), "--duration", "300"],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            listed = httpx.get(
                f"{base}/api/v1/messages/", params={"max_count": 200}, headers={"X-API-Key": api_key}
            )
            message_ids = [m["id"] for m in listed.json()]
            print(f"{len(message_ids)} messages to view; {args.users} people for {args.duration:.0f} s")
            times: dict[str, list[float]] = defaultdict(list)
            errors: list[str] = []
            until = time.monotonic() + args.duration

            async def run_all() -> None:
                await asyncio.gather(
                    *(
                        person(base, f"bench-{i}", message_ids, until, times, errors)
                        for i in range(args.users)
                    )
                )

            started = time.monotonic()
            asyncio.run(run_all())
            elapsed = time.monotonic() - started
            total = sum(len(v) for v in times.values())
            report(f"website, {args.users} people: {total / elapsed:.1f} pages/s in all", times, elapsed)
            if errors:
                print(f"errors: {len(errors)} (first: {errors[:3]})")
            baseline = asyncio.run(backend_baseline(base, api_key, message_ids, 200))
            report(
                "baseline: the backend calls behind the pages, one at a time, straight to /api/v1", baseline
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
