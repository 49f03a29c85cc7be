"""Translations: gettext catalogs (``locales/<lang>/LC_MESSAGES/messages.po``) loaded with Babel.

The ``.po`` files are compiled in memory when the website starts, so the tree holds no binary ``.mo``
files. The language of a request lives in a context variable set by the website's middleware; the UI
language is the task language the person picked.

To add strings: mark them ``{{ _("...") }}`` in templates or ``_("...")`` in Python, then
``pybabel extract -F src/oasst/web/babel.cfg -o messages.pot .`` (from the repository root) and
``pybabel update -i messages.pot -d src/oasst/web/locales`` (see docs/web/translations.md).
"""

from __future__ import annotations

import contextvars
import io
from functools import cache
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALES_DIR = Path(__file__).parent / "locales"
RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur", "yi", "ps", "sd", "ug"})

current_lang: contextvars.ContextVar[str] = contextvars.ContextVar("oasst_web_lang", default="en")


@cache
def translations(lang: str) -> NullTranslations:
    """The compiled catalog of ``lang`` (English, the source language, has none)."""
    po = LOCALES_DIR / lang / "LC_MESSAGES" / "messages.po"
    if not po.is_file():
        return NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer)


def N_(message: str) -> str:
    """Marks a string for extraction only (the gettext convention); translate it with ``gettext`` where shown.

    For texts kept in constants (task titles, skip reasons, label wording) that are translated later, in
    the reader's language. Babel's extractor knows ``N_`` as a keyword.
    """
    return message


def gettext(message: str) -> str:
    return translations(current_lang.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current_lang.get()).ngettext(singular, plural, n)


def text_direction(lang: str) -> str:
    return "rtl" if lang.split("-")[0] in RTL_LANGUAGES else "ltr"


@cache
def language_name(lang: str) -> str:
    """The language's own name ("Deutsch", "español", "العربية"), for the language menu."""
    try:
        name = Locale.parse(lang.replace("-", "_")).get_display_name(lang.replace("-", "_"))
    except (ValueError, LookupError):
        return lang
    return (name or lang)[:1].upper() + (name or lang)[1:]


def available_catalogs() -> list[str]:
    return sorted(p.name for p in LOCALES_DIR.iterdir() if (p / "LC_MESSAGES" / "messages.po").is_file())
