"""`email-service preview`: the welcome email exactly as the service would send it, for one made-up signup.

It renders through the same `WelcomeEmail` as the consumer, from the same (checked) templates and settings, so
what it shows is what a mailbox gets; `--format html` or `text` decodes that part of the rendered message.
"""

from __future__ import annotations

import email
import email.policy
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from email.message import EmailMessage

from .config import Settings
from .events import UserSignedUp
from .template_files import LocaleFiles
from .templates import welcome_email

FORMATS = ("html", "text", "eml")
PREVIEW_EVENT_ID = uuid.UUID("00000000-0000-4000-8000-000000000000")


def preview(settings: Settings, templates: Mapping[str, LocaleFiles], *, locale: str, name: str,
            address: str = "preview@example.com", fmt: str = "html") -> bytes:
    """The bytes `fmt` asks for: the whole RFC 5322 message (eml) or one decoded part (UTF-8)."""
    event = UserSignedUp(event_id=str(PREVIEW_EVENT_ID), occurred_at=datetime.now(timezone.utc), email=address,
                         name=name, locale=locale)
    data = welcome_email(settings, templates).render(event).data
    if fmt == "eml":
        return data
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",) if fmt == "html" else ("plain",))
    assert part is not None
    return str(part.get_content()).encode("utf-8")
