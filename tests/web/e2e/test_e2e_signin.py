"""In a real browser: e-mail sign-in and the terms, dark mode, sign-out."""

from __future__ import annotations

import uuid
from typing import Any

from tests.web.e2e.conftest import NewPage, Site, dev_sign_in


def test_magic_link_then_terms_then_dashboard(new_page: NewPage, site: Site) -> None:
    page: Any = new_page()
    email = f"e2e-{uuid.uuid4().hex[:8]}@example.org"
    page.goto("/dashboard")
    assert "/signin" in page.url
    page.fill("#email", email)
    page.click("button[type=submit].primary")
    page.wait_for_selector("[data-testid=link-sent]")
    links = [link for link in site.sign_in_links() if link]
    assert links, "the sign-in link was not printed"
    page.goto(links[-1])
    page.wait_for_url("**/tos**")
    page.click("[data-testid=accept-tos]")
    page.wait_for_url("**/dashboard")
    assert page.locator("[data-testid=welcome]").is_visible()


def test_dark_mode_toggle_sticks(new_page: NewPage) -> None:
    page: Any = new_page(color_scheme="light")
    dev_sign_in(page, f"dark-{uuid.uuid4().hex[:6]}")
    page.click("#theme-toggle")
    assert page.locator("html").get_attribute("data-theme") == "dark"
    page.reload()
    assert page.locator("html").get_attribute("data-theme") == "dark"
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background != "rgb(247, 247, 249)"


def test_sign_out(new_page: NewPage) -> None:
    page: Any = new_page()
    dev_sign_in(page, f"out-{uuid.uuid4().hex[:6]}")
    page.click("[data-testid=signout]")
    page.goto("/dashboard")
    assert "/signin" in page.url
