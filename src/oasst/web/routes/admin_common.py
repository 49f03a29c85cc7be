"""What the admin pages share: the notice shown after an action, redirects back, and page sizes."""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import urlencode

from fastapi.responses import RedirectResponse

from oasst.web.i18n import N_
from oasst.web.i18n import gettext as _

PAGE_SIZE = 50


# ``?done=<code>`` after a POST: the page says what just happened
NOTICES = {
    "saved": N_("The changes were saved."),
    "banned": N_("The user is banned: signed out everywhere, and the backend refuses their tasks."),
    "unbanned": N_("The user is no longer banned."),
    "deleted": N_("The message and the replies below it were deleted."),
    "undeleted": N_("The message and its parents were restored."),
    "halted": N_("The tree is halted: no more tasks are handed out for it."),
    "resumed": N_("The tree was resumed: it is back in the state it had before."),
    "edited": N_("The message was edited; the old text is kept in its history."),
    "processed": N_("The flagged message was marked as processed."),
}


def notice(done: str | None) -> str | None:
    """The sentence for a ``done`` code, in the reader's language (unknown codes say nothing)."""
    text = NOTICES.get(done or "")
    return _(text) if text else None


def done_redirect(path: str, done: str, **params: str) -> RedirectResponse:
    """Back to ``path`` (a site path this module built), saying ``done`` there."""
    query = urlencode({**params, "done": done})
    return RedirectResponse(f"{path}?{query}", status_code=HTTPStatus.SEE_OTHER)
