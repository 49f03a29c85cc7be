"""Jinja2 environment of the website and the one ``render`` helper every page uses."""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from oasst.web import i18n
from oasst.web.rendering import render_message

TEMPLATES_DIR = Path(__file__).parent / "templates"


def csrf_token(request: Request) -> str:
    """This browser session's CSRF token (made on first use); every form posts it back."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return str(token)


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # templates ship with the package: no stat() of every template on every page
    )
    env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.filters["markdown"] = lambda text: Markup(render_message(text or ""))
    env.filters["date"] = _date
    env.globals["language_name"] = i18n.language_name
    return env


def _date(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return value
    return value.strftime("%Y-%m-%d %H:%M")


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    env: jinja2.Environment = request.app.state.templates
    settings = request.app.state.settings
    lang = i18n.current_lang.get()
    page = env.get_template(name).render(
        request=request,
        account=getattr(request.state, "account", None),
        csrf_token=csrf_token(request),
        lang=lang,
        dir=i18n.text_direction(lang),
        languages=settings.languages,
        settings=settings,
        **context,
    )
    return HTMLResponse(page, status_code=status_code)
