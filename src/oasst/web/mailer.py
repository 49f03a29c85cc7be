"""Sending sign-in links: real SMTP when configured, the server console otherwise (development)."""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from typing import Protocol

import anyio

from oasst.web.settings import SmtpSettings

log = logging.getLogger("oasst.web.mail")


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None: ...


class ConsoleMailer:
    """Writes each mail to the log (and keeps the last ones, so tests and ``oasst up`` can read them)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def send(self, to: str, subject: str, body: str) -> None:
        self.sent.append((to, subject, body))
        del self.sent[:-100]
        log.warning("mail to %s: %s\n%s", to, subject, body)


class SmtpMailer:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.settings.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        await anyio.to_thread.run_sync(self._deliver, message)

    def _deliver(self, message: EmailMessage) -> None:
        s = self.settings
        assert s.host is not None
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if s.port == 465:
            smtp = smtplib.SMTP_SSL(s.host, s.port, context=context, timeout=20)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=20)
        with smtp:
            if s.port != 465 and s.starttls:
                smtp.starttls(context=context)
            if s.username:
                smtp.login(s.username, s.password.get_secret_value() if s.password else "")
            smtp.send_message(message)


def make_mailer(settings: SmtpSettings) -> Mailer:
    return SmtpMailer(settings) if settings.host else ConsoleMailer()
