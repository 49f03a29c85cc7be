"""Markdown to safe HTML: what volunteers write is shown formatted, and nothing in it can run.

Raw HTML in a message is escaped by the Markdown parser (``html=False``), and the output is cleaned
again by an allow-list sanitiser (nh3), so a ``<script>``, an ``onerror=`` or a ``javascript:`` link in a
message renders as inert text.
"""

from __future__ import annotations

from functools import cache, lru_cache

import nh3
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol",
    "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "th": {"style"}, "td": {"style"}}


@cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(["table", "strikethrough"])


def render_markdown(text: str) -> str:
    html = _parser().render(text)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


CACHED_TEXT_CHARS = 16_384


@lru_cache(maxsize=2048)
def _render_cached(text: str) -> str:
    return render_markdown(text)


def render_message(text: str) -> str:
    """``render_markdown`` for stored messages: pages show the same messages again and again (a tree view
    renders every message of its tree), so the HTML of texts up to 16 KiB is kept (2,048 of them)."""
    return _render_cached(text) if len(text) <= CACHED_TEXT_CHARS else render_markdown(text)
