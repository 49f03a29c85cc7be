"""``oasst worker run``: help, clear errors, and the real process — it serves, stops cleanly on SIGTERM,
and ends with the server's reason when refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from oasst.cli.main import app
from oasst.inference.protocol import Refused
from tests.backend.live_server import serve
from tests.inference.test_worker_runner import FakeServer

cli = CliRunner()


def test_help() -> None:
    result = cli.invoke(app, ["worker", "run", "--help"])
    assert result.exit_code == 0
    for option in ("--server", "--key", "--model", "--upstream", "--max-parallel", "--name"):
        assert option in result.output


def test_needs_a_model_or_an_upstream_and_a_key() -> None:
    result = cli.invoke(app, ["worker", "run", "--key", "k"])
    assert result.exit_code == 1 and "--model" in result.output
    result = cli.invoke(app, ["worker", "run", "--key", "k", "--model", "m", "--upstream", "http://u"])
    assert result.exit_code == 1
    result = cli.invoke(app, ["worker", "run", "--model", "m"], env={"OASST_WORKER_KEY": ""})
    assert result.exit_code == 1 and "key" in result.output


def test_unloadable_model_is_a_clear_error(tmp_path: object) -> None:
    pytest.importorskip("torch")
    result = cli.invoke(app, ["worker", "run", "--key", "k", "--model", str(tmp_path)])
    assert result.exit_code == 1 and "cannot load" in result.output


def worker_process(url: str, *extra: str) -> subprocess.Popen[str]:
    from tests.inference.test_engines import tiny_model_dir

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "oasst.cli.main", "worker", "run", "--server", url, "--key", "k"]
    command += ["--model", str(tiny_model_dir()), "--model-name", "tiny", "--name", "cli", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_serves_and_stops_cleanly_on_sigterm() -> None:
    pytest.importorskip("torch")
    server = FakeServer()
    with serve(server.app) as url:  # type: ignore[arg-type]
        process = worker_process(url, "--max-parallel", "3")
        try:
            deadline = time.monotonic() + 60
            while not server.of_type("hello"):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the worker did not connect"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    assert "Worker stopped." in err
    hello = server.of_type("hello")[0]
    assert (hello["model"], hello["max_parallel"], hello["engine"], hello["name"]) == (
        "tiny",
        3,
        "transformers",
        "cli",
    )


@pytest.mark.slow
def test_refused_worker_exits_with_the_reason() -> None:
    pytest.importorskip("torch")
    server = FakeServer(refuse=Refused(code="key_invalid", message="Unknown or disabled key."))
    with serve(server.app) as url:  # type: ignore[arg-type]
        process = worker_process(url)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "refused" in err and "Unknown or disabled key" in err
