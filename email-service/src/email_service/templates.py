"""The welcome email, rendered straight to RFC 5322 bytes from templates prepared once per locale.

Building `email.message.EmailMessage` objects per mail costs more CPU than the SMTP exchange itself, so the
static parts (headers, subject, product name, MIME skeleton) are encoded once at start-up and each mail only
substitutes the user's name and address:
- the name is HTML-escaped in the HTML part;
- in the To header the name is a quoted-string when it is printable ASCII and RFC 2047 encoded-words (base64)
  otherwise, so no character of it can end the header line or start a new one (no header injection);
- both parts are UTF-8, base64-encoded in 76-character lines (safe for any server, any script);
- the Message-ID derives from the event id, so a redelivered event produces the same Message-ID.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass
from email.utils import formatdate, parseaddr
from importlib import resources

from .events import LOCALES, UserSignedUp

_CHUNK_BYTES = 45  # 45 bytes -> 60 base64 characters: an encoded word stays under the 75-character limit


def encoded_words(text: str) -> str:
    """RFC 2047 encoded-words for a header, split on character boundaries and folded."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for ch in text:
        width = len(ch.encode("utf-8"))
        if size + width > _CHUNK_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(ch)
        size += width
    if chunk:
        words.append("".join(chunk))
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words)


def display_name(name: str) -> str:
    """The name as an RFC 5322 display name: a quoted-string when it is plain printable ASCII, else encoded-words.
    Either way nothing in it can end the header line."""
    if name.isascii() and name.isprintable():
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return encoded_words(name)


def _body_base64(text: str) -> bytes:
    return base64.encodebytes(text.encode("utf-8")).replace(b"\n", b"\r\n")


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


@dataclass(frozen=True, slots=True)
class _LocaleTemplate:
    locale: str
    subject_header: bytes
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    sender: str
    recipient: str
    message_id: str
    data: bytes


class WelcomeEmail:
    """Renders the welcome email for a user.signed_up event."""

    def __init__(self, mail_from: str, product_name: str) -> None:
        _, self.sender = parseaddr(mail_from)
        self.domain = self.sender.rpartition("@")[2]
        self._from_header = f"From: {mail_from}\r\n".encode("ascii")
        files = resources.files("email_service").joinpath("templates")
        subjects = json.loads(files.joinpath("subjects.json").read_text("utf-8"))
        self._templates = {}
        for locale in LOCALES:
            subject = subjects[locale].replace("{{product}}", product_name)
            subject_value = subject if subject.isascii() else encoded_words(subject)
            self._templates[locale] = _LocaleTemplate(
                locale=locale,
                subject_header=f"Subject: {subject_value}\r\n".encode("ascii"),
                text=_crlf(files.joinpath(f"welcome.{locale}.txt").read_text("utf-8")
                           .replace("{{product}}", product_name)),
                html=_crlf(files.joinpath(f"welcome.{locale}.html").read_text("utf-8")
                           .replace("{{product}}", html.escape(product_name, quote=True))),
            )
        self._date_second = -1
        self._date_header = b""

    def _date(self) -> bytes:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date_header = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("ascii")
        return self._date_header

    def render(self, event: UserSignedUp) -> RenderedEmail:
        template = self._templates[event.locale]
        message_id = f"<{event.event_id}@{self.domain}>"
        boundary = f"=_welcome_{event.event_id}"
        text = _body_base64(template.text.replace("{{name}}", event.name))
        html_part = _body_base64(template.html.replace("{{name}}", html.escape(event.name, quote=True)))
        data = b"".join((
            self._from_header,
            f"To: {display_name(event.name)}\r\n <{event.email}>\r\n".encode("ascii"),
            template.subject_header,
            self._date(),
            f"Message-ID: {message_id}\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Language: {template.locale}\r\n"
            f"Auto-Submitted: auto-generated\r\n"
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
            f"\r\n"
            f"--{boundary}\r\n"
            f'Content-Type: text/plain; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n".encode("ascii"),
            text,
            f"--{boundary}\r\n"
            f'Content-Type: text/html; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n".encode("ascii"),
            html_part,
            f"--{boundary}--\r\n".encode("ascii"),
        ))
        return RenderedEmail(sender=self.sender, recipient=event.email, message_id=message_id, data=data)
