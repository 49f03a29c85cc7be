"""The ``oasst`` command line: help everywhere, db and keys commands on real databases, ``oasst up`` as a
real server process, and ``oasst simulate`` against a live backend."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from oasst.backend.app import create_app
from oasst.backend.db import Database, make_engine
from oasst.backend.models import Base
from oasst.cli import backend_cmds
from oasst.cli.main import app
from oasst.client import BackendClient, OasstApiError
from tests.conftest import Keys, make_test_settings

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def all_commands() -> list[list[str]]:
    """Every command path of the CLI: groups and their commands."""
    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():  # a group
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


@pytest.fixture(autouse=True)
def _no_oasst_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OASST_"):
            monkeypatch.delenv(name)


def test_train_settings_show_every_help_text_whole() -> None:
    """Help with brackets ("e.g. [en, de]") must not be taken for terminal markup and vanish."""
    from oasst.training.sft import SftConfig

    result = runner.invoke(app, ["train", "sft", "--settings"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "(e.g. [en, de])" in result.output
    for name in ("model", "data", "langs", "output_dir"):
        assert name in SftConfig.__dataclass_fields__ and f" {name} " in result.output


def test_every_command_has_help() -> None:
    paths = all_commands()
    names = {" ".join(p) for p in paths}
    assert {
        "up",
        "simulate",
        "backend serve",
        "db upgrade",
        "db current",
        "keys create",
        "keys list",
        "web serve",
    } <= names
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        command: Any = typer.main.get_command(app)
        for name in path:
            command = command.commands[name]
        assert command.help or command.short_help, f"{path} has no help text"


def test_help_does_not_import_the_backend() -> None:
    code = (
        "import sys; from oasst.cli.main import app; "
        "heavy = ('sqlalchemy', 'fastapi', 'uvicorn', 'oasst.backend', 'httpx'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("oasst ")


# -- db ------------------------------------------------------------------------------------------------


def test_db_upgrade_creates_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'oasst.db'}"
    before = runner.invoke(app, ["db", "current", "--database-url", url])
    assert before.exit_code == 1
    assert "oasst db upgrade" in before.output

    result = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "Migrated" in result.output
    engine = create_engine(url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()

    again = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert again.exit_code == 0 and "already at revision" in again.output
    current = runner.invoke(app, ["db", "current"], env={"OASST_DATABASE_URL": url})
    assert current.exit_code == 0 and "up to date" in current.output


def test_db_errors_are_clear_and_without_traceback(tmp_path: Path) -> None:
    unreachable = runner.invoke(
        app, ["db", "upgrade", "--database-url", "postgresql+psycopg://u:secret@127.0.0.1:1/x"]
    )
    assert unreachable.exit_code == 1
    assert "Could not connect to the database" in unreachable.stderr
    assert "secret" not in unreachable.output
    assert "Traceback" not in unreachable.output

    bogus = runner.invoke(app, ["db", "upgrade", "--database-url", "not a url"])
    assert bogus.exit_code == 1 and "Not a database URL" in bogus.stderr


# -- keys ----------------------------------------------------------------------------------------------


def test_keys_create_prints_a_key_that_authenticates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'oasst.db'}"
    assert runner.invoke(app, ["db", "upgrade", "--database-url", url]).exit_code == 0

    result = runner.invoke(
        app, ["keys", "create", "--description", "my script", "--trusted", "--database-url", url]
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert len(key) >= 32 and "\n" not in key
    assert "shown once" in result.stderr

    settings = make_test_settings(url)
    database = Database(make_engine(settings))
    backend = create_app(settings, database=database, migrate=False)

    async def call(api_key: str) -> dict[str, int]:
        transport = httpx.ASGITransport(app=backend)
        async with BackendClient("http://backend.test", api_key, transport=transport) as client:
            return await client.tree_state_counts()  # a trusted-only endpoint

    try:
        assert asyncio.run(call(key)) == {}
        with pytest.raises(OasstApiError, match="API key"):
            asyncio.run(call(key[:-1] + ("A" if key[-1] != "A" else "B")))
    finally:
        database.dispose()

    listed = runner.invoke(app, ["keys", "list", "--database-url", url])
    assert listed.exit_code == 0
    assert "my script" in listed.output and "trusted" in listed.output
    assert key not in listed.output


def test_keys_need_a_migrated_database(tmp_path: Path) -> None:
    missing = runner.invoke(
        app, ["keys", "create", "--description", "x", "--database-url", f"sqlite:///{tmp_path}/no.db"]
    )
    assert missing.exit_code == 1 and "oasst db upgrade" in missing.stderr

    empty = tmp_path / "empty.db"
    create_engine(f"sqlite:///{empty}").connect().close()
    unmigrated = runner.invoke(app, ["keys", "list", "--database-url", f"sqlite:///{empty}"])
    assert unmigrated.exit_code == 1 and "oasst db upgrade" in unmigrated.stderr


# -- backend serve -------------------------------------------------------------------------------------


def test_backend_app_factory_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'prod.db'}"
    monkeypatch.setenv("OASST_DATABASE_URL", url)
    monkeypatch.setenv("OASST_TREE_MANAGER__GOAL_TREE_SIZE", "5")
    backend = backend_cmds.app_factory()
    assert backend.state.settings.database_url == url
    assert backend.state.settings.tree_manager.goal_tree_size == 5
    backend.state.database.dispose()


def test_backend_serve_refuses_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OASST_ENVIRONMENT", "production")
    monkeypatch.setenv("OASST_ROOT_TOKENS", '["short"]')
    result = runner.invoke(app, ["backend", "serve"])
    assert result.exit_code == 1
    assert "Invalid backend settings" in result.stderr and "root" in result.stderr.lower()
    assert "Traceback" not in result.output


# -- up --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def up_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OASST_")}
    env.update(PYTHONUNBUFFERED="1", HOME=str(tmp_path / "home"), COLUMNS="200")
    return env


def start_up(data_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "oasst.cli.main", "up", "--port", str(port), "--data-dir", str(data_dir)]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )


def wait_healthy(proc: subprocess.Popen[str], base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"oasst up exited early ({proc.returncode}): {proc.communicate()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("oasst up did not answer /health in time")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:  # a failed test must not leave servers behind
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
def test_up_serves_with_a_working_key_and_stops_on_sigint(
    tmp_path: Path, up_env: dict[str, str], running: list[subprocess.Popen[str]]
) -> None:
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_up(data_dir, port, up_env)
    running.append(proc)
    wait_healthy(proc, base)

    key_file = data_dir / "api_key"
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / "root_token").stat().st_mode) == 0o600
    assert (data_dir / "oasst.db").exists()
    counts = httpx.get(f"{base}/api/v1/stats/tree_manager/state_counts", headers={"X-API-Key": key})
    assert counts.status_code == 200, counts.text  # trusted key
    refused = httpx.get(f"{base}/api/v1/stats/tree_manager/state_counts", headers={"X-API-Key": "nope"})
    assert refused.status_code == 403 and refused.json()["error_code"] == 2
    assert httpx.get(f"{base}/docs").status_code == 200
    front = httpx.get(f"{base}/")  # the website answers every other path
    assert front.status_code == 200 and 'href="/signin"' in front.text
    assert (data_dir / "web.db").exists()
    root = {"Authorization": f"Bearer {(data_dir / 'root_token').read_text().strip()}"}
    deadline = time.monotonic() + 120
    while not httpx.get(f"{base}/inference/admin/workers", headers=root).json():  # the local model's worker
        assert time.monotonic() < deadline, "the local worker did not connect"
        time.sleep(0.2)

    code, out, err = stop(proc)
    assert code == 0, err
    assert "retrying" not in out + err  # the local worker left before the server closed its connections
    assert key in out
    assert f"{base}/docs" in out
    assert f'curl -H "X-API-Key: {key}"' in out
    assert "Traceback" not in err

    # the second run reuses the key
    proc = start_up(data_dir, port, up_env)
    running.append(proc)
    wait_healthy(proc, base)
    assert key_file.read_text().strip() == key
    again = httpx.get(f"{base}/api/v1/stats/tree_manager/state_counts", headers={"X-API-Key": key})
    assert again.status_code == 200
    assert stop(proc)[0] == 0


@pytest.mark.slow
def test_backend_serve_runs_workers_from_the_environment(
    tmp_path: Path, up_env: dict[str, str], running: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    env = {**up_env, "OASST_DATABASE_URL": f"sqlite:///{tmp_path / 'prod.db'}"}
    command = [
        sys.executable,
        "-m",
        "oasst.cli.main",
        "backend",
        "serve",
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    running.append(proc)
    wait_healthy(proc, f"http://127.0.0.1:{port}")
    code, _, err = stop(proc)
    assert code == 0, err
    assert "2 worker(s)" in err and err.count("Started server process") == 2
    assert "Traceback" not in err


def test_up_on_a_busy_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["up", "--port", str(port), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "--port" in result.stderr


# -- simulate --------------------------------------------------------------------------------------------


@contextmanager
def serve(backend: FastAPI) -> Iterator[str]:
    """The app in a real uvicorn server on a free port, in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(backend, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_simulate_needs_a_stop_condition() -> None:
    result = runner.invoke(app, ["simulate", "--api-key", "k"])
    assert result.exit_code == 1
    assert "--until-ready" in result.stderr and "--duration" in result.stderr


def test_simulate_against_a_live_backend(database_url: str, database: Database, keys: Keys) -> None:
    settings = make_test_settings(
        database_url,
        tree_manager={
            "goal_tree_size": 3,
            "num_reviews_initial_prompt": 1,
            "num_reviews_reply": 1,
            "num_required_rankings": 1,
            "max_active_trees": 2,
        },
        rate_limits={"enabled": False},
    )
    backend = create_app(settings, database=database, migrate=False)
    with serve(backend) as url:
        result = runner.invoke(
            app,
            [
                "simulate",
                "--url",
                url,
                "--api-key",
                keys.trusted,
                "--users",
                "3",
                "--until-ready",
                "1",
                "--duration",
                "120",
                "--seed",
                "3",
            ],
        )
        refused = runner.invoke(app, ["simulate", "--url", url, "--api-key", "wrong", "--duration", "5"])
    assert result.exit_code == 0, result.output
    for heading in ("Tasks", "Latency", "initial_prompt", "cycles", "new trees ready for export"):
        assert heading in result.stdout
    assert refused.exit_code == 1
    assert "refused the API key" in refused.stderr
    assert "Traceback" not in refused.output
