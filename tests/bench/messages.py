"""The signups the consumers drain, prepared in advance as (body, AMQP properties) for bulk publishing.

Invariant: every contender drains the same signups (the same names and locales, one in four in Chinese), each
with a fresh event id; only the envelope differs: our event as the producer publishes it, a Celery task message,
a Dramatiq message (those two are built in their contender modules).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

from .broker import Prepared

# The sender of every contender's mail (the peers hard-code it: peers/mailtask.py, peers/ceiling_consumer.py); the
# email-service derives Message-ID <event id@domain> from it, which the end-to-end section matches.
MAIL_FROM = "Welcome <no-reply@example.com>"
MESSAGE_ID_DOMAIN = "example.com"
NAMES = [("Ada Lovelace", "en"), ("Grace Hopper", "en"), ("Alan Turing", "en"), ("李雷", "zh-CN")]


def signups(n: int) -> Iterator[tuple[str, str, str, str]]:
    """(event_id, email, name, locale) n times."""
    for i in range(n):
        name, locale = NAMES[i % len(NAMES)]
        yield str(uuid.uuid4()), f"user{i}@example.com", name, locale


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def our_events(n: int) -> Iterator[Prepared]:
    """user.signed_up events with the properties producer-service sets."""
    for event_id, email, name, locale in signups(n):
        body = json.dumps({"schema_version": 1, "event_type": "user.signed_up", "event_id": event_id,
                           "occurred_at": _now(), "user": {"email": email, "name": name, "locale": locale}},
                          ensure_ascii=False, separators=(",", ":")).encode()
        cid = uuid.uuid4().hex
        yield body, {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2,
                     "message_id": event_id, "correlation_id": cid, "type": "user.signed_up",
                     "app_id": "producer-service", "application_headers": {"x-correlation-id": cid}}


def backlog_events(n: int) -> Iterator[Prepared]:
    """Valid events with few properties: publishing 200,000 of them is bound by the client's CPU."""
    head = b'{"schema_version":1,"event_type":"user.signed_up","event_id":"'
    tail = ('","occurred_at":"' + _now() + '","user":{"email":"ada@example.com","name":"Ada Lovelace",'
            '"locale":"en"}}').encode()
    for _ in range(n):
        event_id = str(uuid.uuid4())
        yield head + event_id.encode() + tail, {"content_type": "application/json", "delivery_mode": 2,
                                                "message_id": event_id}
