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
from contextlib import contextmanager
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
    database_url: str = ""

    def sign_in_links(self) -> list[str]:
        return re.findall(r"(http://\S+/signin/verify\?token=\S+)", self.log.read_text())


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``oasst up --dev-login`` on its own PostgreSQL database, on a free port."""
    with running_site(tmp_path_factory, TREE_ENV) as started:
        yield started


@contextmanager
def running_site(tmp_path_factory: pytest.TempPathFactory, tree_env: dict[str, str]) -> Iterator[Site]:
    """Starts ``oasst up --dev-login`` with these settings on a fresh PostgreSQL database; stops it after."""
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
    env = {**os.environ, **tree_env, "OASST_DATABASE_URL": database_url, "COLUMNS": "200"}
    command = [sys.executable, "-m", "oasst.cli.main", "up", "--port", str(port), "--data-dir", str(data_dir)]
    with log.open("w") as out:
        proc = subprocess.Popen([*command, "--dev-login", "--admin-email", "boss@example.org"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, url, log)
        api_key = (data_dir / "api_key").read_text().strip()
        yield Site(url=url, api_key=api_key, data_dir=data_dir, log=log, database_url=database_url)
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


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One browser per test module: Playwright's sync API keeps an event loop running on this thread while
    it is open, which would break ``asyncio.run`` in whatever tests this process runs next."""
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


# -- helpers of the task, moderation and ranking tests --------------------------------------------


def backend(site: Site) -> httpx.Client:
    """The backend's API (``/api/v1``) with the site's trusted key: to check what the website stored."""
    return httpx.Client(base_url=f"{site.url}/api/v1", headers={"X-API-Key": site.api_key}, timeout=30)


class ApiVolunteers:
    """People doing tasks through the backend's API directly, as another frontend would: grows trees fast."""

    def __init__(self, site: Site, lang: str = "en") -> None:
        self.api = backend(site)
        self.lang = lang
        self.accepted_tos: set[str] = set()

    def __enter__(self) -> ApiVolunteers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.api.close()

    def user(self, name: str) -> dict[str, str]:
        if name not in self.accepted_tos:
            body = {"id": name, "display_name": name, "auth_method": "local", "tos_acceptance": True}
            self.api.post("/frontend_users/", json=body).raise_for_status()
            self.accepted_tos.add(name)
        return {"id": name, "display_name": name, "auth_method": "local"}

    def task(self, name: str, task_type: str) -> dict[str, Any]:
        answer = self.api.post(
            "/tasks/", json={"type": task_type, "user": self.user(name), "lang": self.lang}
        )
        answer.raise_for_status()
        task: dict[str, Any] = answer.json()
        assert task["type"] == task_type, task
        return task

    def _ack(self, task: dict[str, Any]) -> str:
        frontend_id = uuid.uuid4().hex
        self.api.post(f"/tasks/{task['id']}/ack", json={"message_id": frontend_id}).raise_for_status()
        return frontend_id

    def write(self, name: str, task_type: str, text: str) -> str:
        """Does a writing task; returns the new message's id."""
        task = self.task(name, task_type)
        reply_id = uuid.uuid4().hex
        body = {"type": "text_reply_to_message", "user": self.user(name), "user_message_id": reply_id,
                "text": text, "lang": self.lang, "message_id": self._ack(task)}  # fmt: skip
        self.api.post("/tasks/interaction", json=body).raise_for_status()
        return str(self.api.get(f"/frontend_messages/{reply_id}").raise_for_status().json()["id"])

    def review(self, name: str, task_type: str, *, spam: float = 0.0) -> str:
        """Does a label task (not spam: accepted); returns the labelled message's id."""
        task = self.task(name, task_type)
        self._ack(task)
        body = {"type": "text_labels", "user": self.user(name), "labels": {"spam": spam},
                "message_id": task["message_id"], "task_id": task["id"]}  # fmt: skip
        self.api.post("/tasks/interaction", json=body).raise_for_status()
        return str(task["message_id"])

    def grow_to_ranking(self, tag: str, replies: list[str]) -> str:
        """A reviewed prompt with these assistant replies, each reviewed: the tree waits for its ranking.

        Returns the prompt's id. Needs a site whose trees take exactly this many replies (goal size
        1 + len(replies), at least that many children per message)."""
        prompt = self.write(
            f"{tag}-author", "initial_prompt", f"Prompt {tag}: name a good first programming language."
        )
        self.review(f"{tag}-reviewer", "label_initial_prompt")
        for i, reply in enumerate(replies):
            self.write(f"{tag}-writer{i}", "assistant_reply", reply)
            self.review(f"{tag}-reviewer", "label_assistant_reply")
        state = self.api.get(f"/messages/{prompt}/tree/state").raise_for_status().json()
        assert state["state"] == "ranking", state
        return prompt


# -- task pages in the browser ----------------------------------------------------------------------


def open_task(page: Any, slug: str) -> str:
    """Opens ``/tasks/<slug>``; returns the task group shown (create, rank, label) or ``"empty"``."""
    page.goto(f"/tasks/{slug}")
    return task_group(page)


def task_group(page: Any) -> str:
    page.wait_for_selector("[data-testid=task-form][data-ready='1'], [data-testid=no-tasks]")
    form = page.locator("[data-testid=task-form]")
    return str(form.get_attribute("data-group")) if form.count() else "empty"


def review_and_submit(page: Any) -> None:
    """Review (confirming an unchanged answer if asked), then Submit; waits for the next page."""
    page.click("[data-testid=review]")
    asked = "[data-testid=unchanged-confirm][open]"
    page.wait_for_selector(f"[data-testid=submit]:not([hidden]), {asked}")
    if page.locator(asked).count():
        page.click("[data-testid=unchanged-continue]")
    with page.expect_navigation():
        page.click("[data-testid=submit]")


def answer_required_labels(page: Any) -> dict[str, str]:
    """Answers every required question of a label task with "no" (yes/no) or 3 (scales)."""
    answers = {}
    for row in page.locator(".label-row[data-mandatory='1']").all():
        name = str(row.get_attribute("data-name"))
        if row.get_attribute("data-widget") == "yes_no":
            row.locator(f"[data-testid=label-{name}-no]").check()
            answers[name] = "no"
        elif row.get_attribute("data-widget") == "likert":
            row.locator(f"[data-testid=label-{name}-3]").check()
            answers[name] = "3"
    return answers


def rank_item_order(page: Any) -> list[int]:
    """The reply indices of the ranking on screen, top (best) first."""
    items = page.locator("[data-testid=rank-list] > .rank-item")
    return [int(str(li.get_attribute("data-index"))) for li in items.all()]
