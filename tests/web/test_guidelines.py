"""Guidelines: the /guidelines page, the one beside each task, translations and the first-task tutorial."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oasst.web.routes import guidelines
from tests.web.conftest import Browser, csrf, dev_sign_in


@pytest.fixture
def fresh_guidelines() -> Iterator[None]:
    guidelines._html.cache_clear()
    yield
    guidelines._html.cache_clear()


def test_guidelines_page_lists_every_guideline(browser: Browser) -> None:
    page = browser().get("/guidelines")  # public: no sign-in needed
    assert page.status_code == 200
    for name in guidelines.GUIDELINES:
        assert f'data-testid="guideline-{name}"' in page.text
    assert "<strong>best (top) to worst (bottom)</strong>" in page.text  # Markdown is rendered
    one = browser().get("/guidelines/ranking")
    assert one.status_code == 200 and "Ranking replies" in one.text
    assert browser().get("/guidelines/nothing").status_code == 404


def test_the_task_page_shows_the_guideline_of_its_type(browser: Browser) -> None:
    ann = browser()
    dev_sign_in(ann, "ann")
    page = ann.get("/tasks/initial_prompt")
    aside = page.text.split('data-testid="guidelines"')[1].split("</details>")[0]
    assert "Writing an initial prompt" in aside and "Be specific and natural" in aside


def test_translated_guidelines_are_used_in_their_language(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_guidelines: None
) -> None:
    for name in guidelines.GUIDELINES:
        (tmp_path / f"{name}.md").write_text(f"English {name}.")
    (tmp_path / "general.de.md").write_text("Deutsch *allgemein*.")
    monkeypatch.setattr(guidelines, "GUIDELINES_DIR", tmp_path)
    ben = browser()
    assert "English general." in ben.get("/guidelines").text
    page = ben.get("/signin")
    ben.post("/lang", data={"csrf_token": csrf(page), "lang": "de", "next": "/guidelines"})
    german = ben.get("/guidelines").text
    assert "Deutsch <em>allgemein</em>." in german and "English ranking." in german  # fallback


def test_the_first_task_tutorial_can_be_dismissed(browser: Browser) -> None:
    cy = browser()
    dev_sign_in(cy, "cy")
    page = cy.get("/tasks/initial_prompt")
    assert 'data-testid="tutorial"' in page.text
    answer = cy.post(
        "/guidelines/tutorial/dismiss",
        data={"csrf_token": csrf(page), "next": "/tasks/initial_prompt"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/tasks/initial_prompt"
    assert 'data-testid="tutorial"' not in cy.get("/tasks/initial_prompt").text
