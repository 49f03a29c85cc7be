"""Translations: every string the website shows is in the German and Spanish catalogs, the catalogs keep
their placeholders, and the language a person picks (or their browser asks for) is the one they read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient

from oasst.protocol.common import LABEL_INFO
from oasst.web.i18n import LOCALES_DIR, available_catalogs
from oasst.web.routes.guidelines import GUIDELINES, GUIDELINES_DIR
from tests.web.conftest import Browser, csrf, dev_sign_in

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "src" / "oasst" / "web"
COMPLETE = ("de", "es")  # every string, always
# Arabic covers at least the pages everyone sees: the frame, the front page, sign-in, terms, dashboard, tasks
CORE_SOURCES = re.compile(
    r"templates/(base|front|dashboard|signin|signin_sent|tos|error)\.html|templates/tasks/|tasks_catalog\.py|routes/tasks\.py"
)
PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?[#0 +-]*\d*(?:\.\d+)?([sdifr%])")

MsgId = str | tuple[str, ...]


def _extracted() -> dict[MsgId, set[str]]:
    """msgid -> the files it comes from, extracted the way ``pybabel extract -F babel.cfg`` does."""
    with (WEB / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    web = str(WEB)

    def on_the_way(path: str) -> bool:  # walk only towards and inside src/oasst/web
        return web.startswith(path) or path.startswith(web)

    found: dict[MsgId, set[str]] = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=DEFAULT_KEYWORDS, directory_filter=on_the_way
    ):
        key = message if isinstance(message, str) else tuple(message)
        found.setdefault(key, set()).add(filename)
    return found


@pytest.fixture(scope="module")
def extracted() -> dict[MsgId, set[str]]:
    found = _extracted()
    assert len(found) > 200, "the extractor found too few strings: is babel.cfg still right?"
    return found


def _catalog(lang: str) -> Catalog:
    with (LOCALES_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return read_po(f, locale=lang)


def _translated(message: Message | None) -> bool:
    if message is None or message.fuzzy:
        return False
    forms = message.string if isinstance(message.string, tuple | list) else (message.string,)
    return all(forms)


def _untranslated(lang: str, msgids: list[MsgId]) -> list[MsgId]:
    catalog = _catalog(lang)
    return [msgid for msgid in msgids if not _translated(catalog.get(msgid))]


@pytest.mark.parametrize("lang", COMPLETE)
def test_every_extracted_string_is_translated(lang: str, extracted: dict[MsgId, set[str]]) -> None:
    missing = _untranslated(lang, sorted(extracted, key=str))
    assert not missing, (
        f"{len(missing)} strings lack a {lang} translation (see docs/web/translations.md): {missing[:10]}"
    )


def test_arabic_covers_the_pages_everyone_sees(extracted: dict[MsgId, set[str]]) -> None:
    core = [msgid for msgid, files in extracted.items() if any(CORE_SOURCES.search(f) for f in files)]
    assert len(core) > 80
    missing = _untranslated("ar", sorted(core, key=str))
    assert not missing, f"{len(missing)} strings of the core pages lack an Arabic translation: {missing[:10]}"


@pytest.mark.parametrize("lang", COMPLETE)
def test_the_backends_label_wording_is_translated(lang: str) -> None:
    """Label tasks show the backend's wording of each label through gettext; it must be in the catalogs."""
    texts = sorted(
        {t for _widget, display, help_text in LABEL_INFO.values() for t in (display, help_text) if t}
    )
    assert not _untranslated(lang, list(texts))


def _placeholders(text: str) -> list[str]:
    return sorted(name or kind for name, kind in PLACEHOLDER.findall(text))


@pytest.mark.parametrize("lang", available_catalogs())
def test_translations_keep_placeholders_and_add_no_markup(lang: str) -> None:
    """A lost or renamed %(name)s breaks the page; markup in a translation would be rendered unescaped."""
    wrong = []
    for message in _catalog(lang):
        if not message.id or not message.string:
            continue
        forms = [message.string] if isinstance(message.string, str) else list(message.string)
        if isinstance(message.id, str):
            pairs = [(message.id, forms[0], True)]
        else:  # a plural form may leave out the number ("one message"), never invent another placeholder
            pairs = [(message.id[-1], form, False) for form in forms if form]
        for source, text, exact in pairs:
            want, got = _placeholders(source), _placeholders(text)
            if (want != got) if exact else not set(got) <= set(want):
                wrong.append((source, text))
            if any(c in text and c not in source for c in "<>"):
                wrong.append((source, text))
    assert not wrong, wrong[:5]


def test_guidelines_have_german_and_spanish_versions() -> None:
    for name in GUIDELINES:
        for lang in COMPLETE:
            text = (GUIDELINES_DIR / f"{name}.{lang}.md").read_text(encoding="utf-8")
            assert text.strip() and text != (GUIDELINES_DIR / f"{name}.md").read_text(encoding="utf-8")


def _switch(client: TestClient, page_path: str, lang: str) -> str:
    """Picks a language with the form in the page header, as a person does."""
    page = client.get(page_path)
    answer = client.post("/lang", data={"csrf_token": csrf(page), "lang": lang, "next": page_path})
    assert answer.status_code == 200, answer.text
    assert answer.url.path == page_path
    return answer.text


def test_switching_the_language_translates_the_site_and_sets_the_direction(browser: Browser) -> None:
    ana = browser()
    dev_sign_in(ana, "ana")
    english = ana.get("/dashboard").text
    assert "Leaderboard" in english and 'dir="ltr"' in english

    german = _switch(ana, "/dashboard", "de")
    assert '<html lang="de" dir="ltr"' in german
    assert "Bestenliste" in german and ">Leaderboard<" not in german
    assert "Anfangsprompt schreiben" in german  # a task title from the task catalog
    assert "Aufgaben auf Deutsch" in german  # the task language is the UI language
    assert "Allgemeine Regeln" in ana.get("/guidelines").text
    assert "Sei du selbst, sei ehrlich." in ana.get("/guidelines/general").text  # general.de.md

    spanish = _switch(ana, "/dashboard", "es")
    assert '<html lang="es" dir="ltr"' in spanish
    assert "Clasificación" in spanish and "Escribir un prompt inicial" in spanish
    assert "Sé tú mismo, sé honesto." in ana.get("/guidelines/general").text

    arabic = _switch(ana, "/leaderboard", "ar")
    assert '<html lang="ar" dir="rtl"' in arabic
    assert "لوحة المتصدرين" in arabic
    assert 'dir="rtl"' in ana.get("/dashboard").text  # the choice sticks for the session

    back = _switch(ana, "/dashboard", "en")
    assert 'dir="ltr"' in back and "Leaderboard" in back


def test_an_unknown_language_is_ignored(browser: Browser) -> None:
    bea = browser()
    dev_sign_in(bea, "bea")
    page = _switch(bea, "/dashboard", "xx")
    assert '<html lang="en"' in page and "Leaderboard" in page


def test_the_browsers_language_is_chosen_for_a_new_visitor(browser: Browser) -> None:
    german = browser(headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}).get("/signin").text
    assert '<html lang="de"' in german and "Anmelden" in german
    spanish = browser(headers={"Accept-Language": "es-MX"}).get("/").text
    assert '<html lang="es"' in spanish and "Iniciar sesión" in spanish
    other = browser(headers={"Accept-Language": "fr-FR,fr;q=0.9"}).get("/signin").text
    assert '<html lang="en"' in other and "Sign in" in other


def test_the_picked_language_wins_over_the_browsers(browser: Browser) -> None:
    cleo = browser(headers={"Accept-Language": "de"})
    dev_sign_in(cleo, "cleo")
    page = _switch(cleo, "/dashboard", "es")
    assert '<html lang="es"' in page and "Bestenliste" not in page
