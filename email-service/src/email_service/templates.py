"""The welcome email, rendered straight to RFC 5322 bytes from templates prepared once per locale.

Building `email.message.EmailMessage` objects per mail costs more CPU than the SMTP exchange itself, so the
static parts (headers, subject, product name, MIME skeleton) are encoded once at start-up and each mail only
substitutes the user's name and address:
- the name is HTML-escaped in the HTML part;
- in the To header the name is a quoted-string when it is printable ASCII and RFC 2047 encoded-words (base64)
  otherwise, so no character of it can end the header line or start a new one (no header injection);
- both parts are UTF-8, base64-encoded in 76-character lines (safe for any server, any script);
- the Message-ID derives from the event id, so a redelivered event produces the same Message-ID;
- an event whose locale has no template gets the default locale's (`on_fallback` counts it), never an error.
The template files themselves are read and checked in template_files.py.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime, parseaddr

from .config import Settings
from .events import UserSignedUp
from .template_files import LocaleFiles, read_templates

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


_LINE_BYTES = 57  # encodebytes writes 76 characters (57 bytes) a line


def _body_base64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


@dataclass(frozen=True, slots=True)
class _PreparedBody:
    """A part's base64 lines up to the last full line before the first {{name}}, encoded once, and the UTF-8 rest
    that each mail splices the name into and encodes. Together they are the part's lines exactly."""

    head: bytes
    rest: bytes

    @classmethod
    def of(cls, text: str) -> _PreparedBody:
        data = text.encode("utf-8")
        first = data.find(b"{{name}}")
        cut = (len(data) if first < 0 else first) // _LINE_BYTES * _LINE_BYTES
        return cls(head=_body_base64(data[:cut]), rest=data[cut:])

    def splice(self, name: bytes) -> bytes:
        return self.head + _body_base64(self.rest.replace(b"{{name}}", name))


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


@dataclass(frozen=True, slots=True)
class _LocaleTemplate:
    locale: str
    subject_header: bytes
    text: _PreparedBody
    html: _PreparedBody


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    sender: str
    recipient: str
    message_id: str
    data: bytes


class WelcomeEmail:
    """Renders the welcome email for a user.signed_up event."""

    def __init__(self, mail_from: str, product_name: str, *, product_url: str = "https://example.com/",
                 logo_url: str | None = None, templates: Mapping[str, LocaleFiles] | None = None,
                 default_locale: str = "en", on_fallback: Callable[[], object] | None = None) -> None:
        _, self.sender = parseaddr(mail_from)
        self.domain = self.sender.rpartition("@")[2]
        self._from_header = f"From: {mail_from}\r\n".encode("ascii")
        sources = templates if templates is not None else read_templates((default_locale,))
        product_html = html.escape(product_name, quote=True)
        url_html = html.escape(product_url, quote=True)
        logo = (f'<img src="{html.escape(logo_url, quote=True)}" alt="{product_html}" height="40" '
                f'style="display:block;height:40px;width:auto;max-width:100%;border:0;">' if logo_url else product_html)
        self._templates = {}
        for locale, files in sources.items():
            subject = files.subject.replace("{{product}}", product_name)
            subject_value = subject if subject.isascii() else encoded_words(subject)
            self._templates[locale] = _LocaleTemplate(
                locale=locale,
                subject_header=f"Subject: {subject_value}\r\n".encode("ascii"),
                text=_PreparedBody.of(_crlf(files.text.replace("{{product}}", product_name)
                                          .replace("{{product_url}}", product_url))),
                html=_PreparedBody.of(_crlf(files.html.replace("{{logo}}", logo).replace("{{product}}", product_html)
                                          .replace("{{product_url}}", url_html))),
            )
        self._default = self._templates[default_locale]
        self._on_fallback = on_fallback
        self._date_second = -1
        self._date_header = b""

    @property
    def locales(self) -> tuple[str, ...]:
        return tuple(self._templates)

    def _date(self) -> bytes:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            stamp = format_datetime(datetime.fromtimestamp(now, timezone.utc))  # "+0000", not the obsolete "GMT"
            self._date_header = f"Date: {stamp}\r\n".encode("ascii")
        return self._date_header

    def render(self, event: UserSignedUp) -> RenderedEmail:
        template = self._templates.get(event.locale)
        if template is None:
            template = self._default
            if self._on_fallback is not None:
                self._on_fallback()
        message_id = f"<{event.event_id}@{self.domain}>"
        boundary = f"=_welcome_{event.event_id}"
        text = template.text.splice(event.name.encode("utf-8"))
        html_part = template.html.splice(html.escape(event.name, quote=True).encode("utf-8"))
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


def welcome_email(settings: Settings, templates: Mapping[str, LocaleFiles] | None = None,
                  on_fallback: Callable[[], object] | None = None) -> WelcomeEmail:
    """The renderer the settings describe; reads (and checks) the templates unless given them already."""
    if templates is None:
        templates = read_templates(settings.locales, settings.templates_dir)
    return WelcomeEmail(settings.mail_from, settings.product_name, product_url=settings.product_url,
                        logo_url=settings.logo_url, templates=templates, default_locale=settings.locales[0],
                        on_fallback=on_fallback)
