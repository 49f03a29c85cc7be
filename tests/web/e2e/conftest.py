"""Browser tests: Debian's Chromium driven by Playwright against ``oasst up`` (backend + website) on a
fresh PostgreSQL database, started once per test process.

* ``OASST_TEST_CHROMIUM`` (default ``/usr/bin/chromium``) is the browser; nothing is downloaded.
* A failing test saves a screenshot and the page's HTML under ``test-artifacts/``.
* With ``CI=true`` a missing Chromium or PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.backend.live_server import free_port
from tests.conftest import IN_CI, PG_SERVER_URL

CHROMIUM = os.environ.get("OASST_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
TREE_ENV = {  # small trees, so a handful of volunteers move a tree through every state
    "OASST_TREE_MANAGER__GOAL_TREE_SIZE": "3",
    "OASST_TREE_MANAGER__MAX_CHILDREN_COUNT": "2",
    "OASST_TREE_MANAGER__NUM_REVIEWS_INITIAL_PROMPT": "1",
    "OASST_TREE_MANAGER__NUM_REVIEWS_REPLY": "1",
    "OASST_TREE_MANAGER__NUM_REQUIRED_RANKINGS": "1",
    "OASST_RATE_LIMITS__ENABLED": "false",
}



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every browser test is slow (./scripts/check --fast leaves them out; CI runs them)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI but missing", pytrace=False)
    pytest.skip(f"{what} missing")


@dataclass
class Site:
    url: str
    api_key: str
    data_dir: Path
    log: Path

    def sign_in_links(self) -> list[str]:
        return re.findall(r"(http://\S+/signin/verify\?token=\S+)", self.log.read_text())


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``oasst up --dev-login`` on its own PostgreSQL database, on a free port."""
    server = make_url(PG_SERVER_URL)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"oasst_e2e_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        _missing(f"PostgreSQL ({exc.__class__.__name__})")
    database_url = server.set(database=name).render_as_string(hide_password=False)
    data_dir = tmp_path_factory.mktemp("site")
    port = free_port()
    log = data_dir / "up.log"
    env = {**os.environ, **TREE_ENV, "OASST_DATABASE_URL": database_url, "COLUMNS": "200"}
    command = [sys.executable, "-m", "oasst.cli.main", "up", "--port", str(port), "--data-dir", str(data_dir)]
    with log.open("w") as out:
        proc = subprocess.Popen([*command, "--dev-login", "--admin-email", "boss@example.org"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, url, log)
        yield Site(url=url, api_key=(data_dir / "api_key").read_text().strip(), data_dir=data_dir, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"oasst up exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"oasst up did not answer in time:\n{log.read_text()}")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        _missing(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


NewPage = Callable[..., Any]


@pytest.fixture
def new_page(chromium: Any, site: Site, request: pytest.FixtureRequest) -> Iterator[NewPage]:
    """Opens pages in fresh browser contexts (separate people); screenshots them if the test fails."""
    contexts: list[Any] = []
    pages: list[Any] = []

    def open_page(**context_options: Any) -> Any:
        context = chromium.new_context(base_url=site.url, **context_options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        pages.append(page)
        return page

    yield open_page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        stem = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        for i, page in enumerate(pages):
            try:
                page.screenshot(path=str(ARTIFACTS / f"{stem}-{i}.png"), full_page=True)
                (ARTIFACTS / f"{stem}-{i}.html").write_text(page.content())
            except Exception as exc:  # a crashed page must not hide the test's own failure
                print(f"could not save the screenshot of page {i}: {exc}")
    for context in contexts:
        context.close()


def dev_sign_in(page: Any, name: str, role: str = "general", accept_terms: bool = True) -> None:
    page.goto("/signin")
    page.fill("#dev-username", name)
    page.select_option("#dev-role", role)
    page.click("[data-testid=dev-signin]")
    if accept_terms:
        page.wait_for_url("**/tos**")
        page.click("[data-testid=accept-tos]")
        page.wait_for_url("**/dashboard")
