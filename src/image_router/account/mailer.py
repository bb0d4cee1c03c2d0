"""Sending the few e-mails local accounts need (password reset links).

`SMTP_URL` names the server: `smtp://[user:password@]host[:port]` (STARTTLS when the server
offers it) or `smtps://…` (TLS from the start). Without one the e-mail is written to the
server's standard error for the operator, never to the log, so reset links do not end up in
collected JSON logs.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

log = logging.getLogger(__name__)


class MailError(Exception):
    """The e-mail could not be handed to the SMTP server."""


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None: ...


@dataclass(frozen=True)
class SmtpMailer:
    host: str
    port: int
    sender: str
    use_tls: bool = False
    username: str | None = None
    password: str | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_url(cls, url: str, sender: str) -> SmtpMailer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://host:port or smtps://host:port")
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 587),
            sender=sender,
            use_tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                use_tls=self.use_tls,
                # None: upgrade when the server offers STARTTLS, as most servers do.
                start_tls=None if not self.use_tls else False,
                username=self.username,
                password=self.password,
                timeout=self.timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailError(f"{self.host}:{self.port}: {exc}") from exc


class ConsoleMailer:
    """No SMTP server configured: the operator reads the e-mail on standard error."""

    async def send(self, to: str, subject: str, body: str) -> None:
        sys.stderr.write(f"\n--- e-mail (SMTP_URL is not set)\nTo: {to}\nSubject: {subject}\n\n")
        sys.stderr.write(body + "\n---\n")
        sys.stderr.flush()
        log.warning("SMTP_URL is not set: an e-mail was written to standard error instead")


def build_mailer(smtp_url: str | None, sender: str) -> Mailer:
    return SmtpMailer.from_url(smtp_url, sender) if smtp_url else ConsoleMailer()
