"""Signing in (magic link, development login), the terms gate, CSRF, sign-out and bans."""

from __future__ import annotations

import re

from oasst.web.mailer import ConsoleMailer
from tests.web.conftest import Browser, csrf, dev_sign_in

LINK = re.compile(r"http://testserver(/signin/verify\?token=\S+)")


def test_magic_link_signs_in_once_and_asks_for_the_terms(browser: Browser, mailer: ConsoleMailer) -> None:
    alice = browser()
    page = alice.get("/signin?next=/leaderboard")
    sent = alice.post(
        "/signin/email",
        data={"csrf_token": csrf(page), "email": "Alice@Example.org", "next": "/dashboard"},
    )
    assert sent.status_code == 200 and "alice@example.org" in sent.text
    to, _subject, body = mailer.sent[-1]
    assert to == "alice@example.org"
    link = LINK.search(body)
    assert link
    landed = alice.get(link.group(1))
    assert landed.url.path == "/tos"  # signed in, but the terms come first
    assert alice.get("/dashboard").url.path == "/tos"

    again = browser().get(link.group(1))  # a link works once
    assert again.status_code == 400 and 'data-error-code="link_invalid"' in again.text


def test_dev_login_role_and_dashboard(browser: Browser) -> None:
    bob = browser()
    dev_sign_in(bob, "bob")
    dashboard = bob.get("/dashboard")
    assert dashboard.status_code == 200
    assert 'data-testid="welcome"' in dashboard.text
    assert 'data-testid="count-initial_prompt"' in dashboard.text
    assert bob.get("/admin").status_code in (403, 404)


def test_forms_without_the_csrf_token_are_refused(browser: Browser) -> None:
    eve = browser()
    eve.get("/signin")
    answer = eve.post("/signin/dev", data={"username": "eve", "role": "admin"})
    assert answer.status_code == 403 and 'data-error-code="csrf_failed"' in answer.text
    wrong = eve.post("/signin/dev", data={"username": "eve", "role": "admin", "csrf_token": "forged"})
    assert wrong.status_code == 403
    assert eve.get("/dashboard").url.path == "/signin"


def test_signed_out_pages_redirect_to_sign_in(browser: Browser) -> None:
    anon = browser()
    answer = anon.get("/dashboard")
    assert answer.url.path == "/signin" and answer.url.params["next"] == "/dashboard"


def test_sign_out_ends_the_session(browser: Browser) -> None:
    carol = browser()
    dev_sign_in(carol, "carol")
    page = carol.get("/dashboard")
    carol.post("/signout", data={"csrf_token": csrf(page)})
    assert carol.get("/dashboard").url.path == "/signin"


def test_open_redirects_are_refused(browser: Browser) -> None:
    dan = browser()
    page = dan.get("/signin")
    answer = dan.post(
        "/signin/dev",
        data={"csrf_token": csrf(page), "username": "dan", "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/dashboard"


def test_security_headers(browser: Browser) -> None:
    page = browser().get("/signin")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
