"""The welcome mail as typical task-queue user code sends it: build an email.message.EmailMessage per mail (text
and HTML alternative, the same templates as the email-service) and hand it to smtplib on a new connection.

Shared by the Celery and Dramatiq workers so both peers do exactly the same work per message.
"""

from __future__ import annotations

import html
import os
import smtplib
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[3] / "email-service" / "src" / "email_service" / "templates"
PRODUCT = "Acme"
MAIL_FROM = Address("Welcome", addr_spec="no-reply@example.com")
SMTP_HOST = os.environ.get("BENCH_SMTP_HOST", "127.0.0.1")
SMTP_PORT = int(os.environ.get("BENCH_SMTP_PORT", "25"))

_SUBJECTS = {loc: (TEMPLATES / f"welcome.{loc}.subject").read_text("utf-8").strip() for loc in ("en", "zh-CN")}
_TEXT = {loc: (TEMPLATES / f"welcome.{loc}.txt").read_text("utf-8").replace("{{product}}", PRODUCT)
         for loc in ("en", "zh-CN")}
_HTML = {loc: (TEMPLATES / f"welcome.{loc}.html").read_text("utf-8").replace("{{product}}", PRODUCT)
         for loc in ("en", "zh-CN")}


def build_message(email: str, name: str, locale: str, event_id: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = _SUBJECTS[locale].replace("{{product}}", PRODUCT)
    msg["From"] = MAIL_FROM
    msg["To"] = Address(display_name=name, addr_spec=email)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{event_id}@example.com>"
    msg.set_content(_TEXT[locale].replace("{{name}}", name))
    msg.add_alternative(_HTML[locale].replace("{{name}}", html.escape(name)), subtype="html")
    return msg


def send_welcome(email: str, name: str, locale: str, event_id: str) -> None:
    msg = build_message(email, name, locale, event_id)
    with smtplib.SMTP(SMTP_HOST, SMTP_PORT, timeout=30) as smtp:
        smtp.send_message(msg)
