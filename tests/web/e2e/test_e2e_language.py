"""In a real browser: the language switch changes the interface and its direction."""

from __future__ import annotations

import uuid
from typing import Any

from tests.web.e2e.conftest import NewPage, dev_sign_in


def test_language_switch_changes_the_interface_and_direction(new_page: NewPage) -> None:
    page: Any = new_page()
    dev_sign_in(page, f"lang-{uuid.uuid4().hex[:6]}")
    with page.expect_navigation():
        page.select_option("#lang-select", "de")
    assert page.locator("html").get_attribute("lang") == "de"
    assert page.locator("nav.main-nav").inner_text().count("Bestenliste") == 1
    with page.expect_navigation():
        page.select_option("#lang-select", "ar")
    assert page.locator("html").get_attribute("dir") == "rtl"
    with page.expect_navigation():
        page.select_option("#lang-select", "en")
    assert page.locator("html").get_attribute("dir") == "ltr"
