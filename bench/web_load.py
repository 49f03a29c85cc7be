"""Load benchmark of the website: signed-in people loading the dashboard, a task page and a tree view.

Starts the site on a fresh PostgreSQL database — ``oasst up`` (website, backend and chat server in one
process) or, with ``--layout split``, the production layout of ``oasst backend serve`` and ``oasst web
serve`` with ``--workers`` processes each — seeds trees with ``oasst simulate`` and signs in N people
through the development login. Each person then goes round a loop for a bounded time: the dashboard, a
random task page (skipped afterwards, so tasks do not pile up) and the tree view of a random message.

Two phases, one after the other:

- **people**: after each page a person reads it for a while before the next click (a pause drawn from an
  exponential distribution, mean ``--think`` seconds, 1 s by default — far quicker than volunteers who
  write and rank, so a busy moment of a community's site);
- **saturation**: nobody pauses; each person asks for the next page the moment the last one arrived. With
  N people always waiting, latency is N / throughput (Little's law), so this phase measures capacity.

Prints pages per second and p50/p95/p99 per page kind, measured at the client on loopback (so: server
time including the backend calls, plus a loopback round trip), and the CPU time per request of the
servers, PostgreSQL and this client. As a baseline in the same run it times the backend calls behind
the pages, straight against the API, so the website's own share is visible.

    python bench/web_load.py                      # 16 people, 30 s per phase, oasst up
    python bench/web_load.py --layout split --workers 2 --think 2 --duration 45
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


def wait_ready(proc: subprocess.Popen[bytes], url: str, what: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited during start-up")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{what} did not start within 90 s")


def oasst(*args: str) -> list[str]:
    return [sys.executable, "-m", "oasst.cli.main", *args]


def start_up(database_url: str, data_dir: Path) -> tuple[list[subprocess.Popen[bytes]], str, str, str]:
    """``oasst up``: website, backend (and chat server) in one process, the backend called in-process."""
    port = free_port()
    env = {**os.environ, **TREE_ENV, "OASST_DATABASE_URL": database_url}
    cmd = oasst(
        "up", "--port", str(port), "--data-dir", str(data_dir), "--dev-login", "--log-level", "warning"
    )
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{base}/health", "oasst up")
    return [proc], base, base + "/api/v1", (data_dir / "api_key").read_text().strip()


def start_split(
    database_url: str, data_dir: Path, workers: int
) -> tuple[list[subprocess.Popen[bytes]], str, str, str]:
    """The production layout: ``oasst backend serve`` and ``oasst web serve``, each with ``workers``
    processes, the website calling the backend over HTTP (docs/web/operations.md)."""
    backend_port, web_port = free_port(), free_port()
    api_base = f"http://127.0.0.1:{backend_port}/api/v1"
    env = {**os.environ, **TREE_ENV, "OASST_DATABASE_URL": database_url}
    quiet = ("--log-level", "warning")
    backend = subprocess.Popen(
        oasst("backend", "serve", "--port", str(backend_port), "--workers", str(workers), *quiet),
        env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_ready(backend, f"http://127.0.0.1:{backend_port}/health", "oasst backend serve")
    created = subprocess.run(
        oasst("keys", "create", "--description", "web bench", "--trusted"),
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    api_key = created.stdout.strip()
    web_env = {
        **os.environ,
        "OASST_WEB_ENVIRONMENT": "development",  # plain-http cookies on loopback
        "OASST_WEB_DEV_LOGIN": "true",
        "OASST_WEB_DATABASE_URL": database_url,
        "OASST_WEB_BACKEND_URL": api_base.removesuffix("/api/v1"),
        "OASST_WEB_BACKEND_API_KEY": api_key,
        "OASST_WEB_BASE_URL": f"http://127.0.0.1:{web_port}",
    }
    web = subprocess.Popen(
        oasst("web", "serve", "--port", str(web_port), "--workers", str(workers), *quiet),
        env=web_env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_ready(web, f"http://127.0.0.1:{web_port}/signin", "oasst web serve")
    return [backend, web], f"http://127.0.0.1:{web_port}", api_base, api_key


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU time used so far by the servers (with their worker processes), PostgreSQL and this client."""
    import psutil

    def used(p: psutil.Process) -> float:
        try:
            times = p.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    servers = [psutil.Process(p.pid) for p in procs]
    server_tree = [*servers, *(c for s in servers for c in s.children(recursive=True))]
    postgres = [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")]
    return {
        "servers": sum(used(p) for p in server_tree),
        "postgres": sum(used(p) for p in postgres),
        "bench client": used(psutil.Process()),
    }


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
    client: httpx.AsyncClient,
    rng: random.Random,
    message_ids: list[str],
    until: float,
    think: float,
    times: dict[str, list[float]],
    errors: list[str],
) -> None:
    """One signed-in person going round dashboard → task page (then skip) → tree view until ``until``."""

    async def read_page() -> None:
        if think > 0:
            await asyncio.sleep(rng.expovariate(1 / think))

    if think > 0:  # people do not click in step: each starts at a random moment of a first pause
        await asyncio.sleep(rng.uniform(0, 2 * think))
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
            await read_page()
            if kind == "task page":  # skip the task so the next visit gets a fresh one
                task = TASK_ID.search(page.text)
                token = CSRF.search(page.text)
                if task and token:
                    await client.post(
                        f"/tasks/{task.group(1)}/skip",
                        data={"csrf_token": token.group(1), "reason": "benchmark"},
                        follow_redirects=False,
                    )


async def load_phase(
    procs: list[subprocess.Popen[bytes]],
    base: str,
    users: int,
    message_ids: list[str],
    duration: float,
    think: float,
    title: str,
) -> tuple[dict[str, list[float]], list[str], float, dict[str, float]]:
    """Signs ``users`` people in (not measured), then lets them go round for ``duration`` seconds;
    returns the page times, errors, seconds taken and the CPU seconds used meanwhile."""
    times: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    clients = [httpx.AsyncClient(base_url=base, follow_redirects=True, timeout=60) for _ in range(users)]
    try:
        await asyncio.gather(*(sign_in(c, f"bench-{i}") for i, c in enumerate(clients)))
        for page in ("/dashboard", "/tasks/random", f"/messages/{message_ids[0]}"):  # warm-up, not timed
            (await clients[0].get(page)).raise_for_status()
        print(f"{title}: {users} people for {duration:.0f} s ...")
        cpu_before = cpu_seconds(procs)
        until = time.monotonic() + duration
        started = time.monotonic()
        await asyncio.gather(
            *(
                person(c, random.Random(i), message_ids, until, think, times, errors)
                for i, c in enumerate(clients)
            )
        )
        elapsed = time.monotonic() - started
        cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(procs).items()}
        return times, errors, elapsed, cpu
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def backend_baseline(
    api_base: str, api_key: str, message_ids: list[str], rounds: int
) -> dict[str, list[float]]:
    """The backend calls behind the pages, timed directly: what the website adds comes on top."""
    times: dict[str, list[float]] = defaultdict(list)
    headers = {"X-API-Key": api_key}
    user = {"id": "baseline", "display_name": "Baseline", "auth_method": "local"}
    async with httpx.AsyncClient(base_url=api_base, headers=headers, timeout=30) as api:
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
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument(
        "--think", type=float, default=1.0, help="mean pause between a person's clicks (0: saturation only)"
    )
    parser.add_argument(
        "--layout",
        choices=("up", "split"),
        default="up",
        help="up: `oasst up`, one process; split: `oasst backend serve` + `oasst web serve` (production)",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes per service in the split layout")
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
    with tempfile.TemporaryDirectory() as data_dir:
        if args.layout == "up":
            procs, base, api_base, api_key = start_up(database_url, Path(data_dir))
        else:
            procs, base, api_base, api_key = start_split(database_url, Path(data_dir), args.workers)
        try:
            print(f"seeding {args.seed_trees} ready trees with oasst simulate ...")
            subprocess.run(
                oasst("simulate", "--url", api_base.removesuffix("/api/v1"), "--api-key", api_key,
                      "--users", "6", "--until-ready", str(args.seed_trees), "--duration", "300"),
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            listed = httpx.get(
                f"{api_base}/messages/", params={"max_count": 200}, headers={"X-API-Key": api_key}
            )
            message_ids = [m["id"] for m in listed.json()]
            print(f"{len(message_ids)} messages to view")
            phases = (
                [("people", args.think), ("saturation", 0.0)] if args.think > 0 else [("saturation", 0.0)]
            )
            for phase, think in phases:
                title = (
                    f"{phase}: pauses of {think:g} s on average between clicks"
                    if think
                    else f"{phase}: no pauses"
                )
                times, errors, elapsed, cpu = asyncio.run(
                    load_phase(procs, base, args.users, message_ids, args.duration, think, title)
                )
                total = sum(len(v) for v in times.values())
                report(f"{title} — {args.users} people, {total / elapsed:.1f} pages/s in all", times, elapsed)
                requests = total + len(times["task page"])  # each task page is followed by its skip (a POST)
                print(
                    "CPU per request (ms): "
                    + ", ".join(f"{k} {1000 * v / max(requests, 1):.1f}" for k, v in cpu.items())
                    + f" ({total} pages and {len(times['task page'])} skips)"
                )
                if errors:
                    print(f"errors: {len(errors)} (first: {errors[:3]})")
            baseline = asyncio.run(backend_baseline(api_base, api_key, message_ids, 200))
            report(
                "baseline: the backend calls behind the pages, one at a time, straight to /api/v1", baseline
            )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
