"""The email service's reading of a message body: the dead-letter reason for every kind of bad input."""

from __future__ import annotations

import json

import pytest

from email_service.errors import DeadLetterReason, PermanentError
from email_service.events import parse_event

GOOD = {"schema_version": 1, "event_type": "user.signed_up", "event_id": "0b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "occurred_at": "2026-11-28T10:00:00.000Z", "user": {"email": "ada@example.com", "name": "Ada", "locale": "en"}}


def test_good_event():
    event = parse_event(json.dumps(GOOD).encode())
    assert event.email == "ada@example.com" and event.occurred_at.tzinfo is not None


@pytest.mark.parametrize("body,reason", [
    (b"\xff\xfe\x00", DeadLetterReason.UNDECODABLE),
    (b"not json", DeadLetterReason.UNDECODABLE),
    (b"", DeadLetterReason.UNDECODABLE),
    (b"[]", DeadLetterReason.INVALID_EVENT),
    (b"{}", DeadLetterReason.INVALID_EVENT),  # JSON of the wrong shape, as the README's table says
    (json.dumps({**GOOD, "user": {**GOOD["user"], "locale": "zh_CN"}}).encode(), DeadLetterReason.INVALID_EVENT),
    (json.dumps({**GOOD, "schema_version": 2}).encode(), DeadLetterReason.UNSUPPORTED_SCHEMA),
    (json.dumps({**GOOD, "schema_version": "1"}).encode(), DeadLetterReason.UNSUPPORTED_SCHEMA),
    (json.dumps({**GOOD, "event_type": "user.deleted"}).encode(), DeadLetterReason.UNSUPPORTED_SCHEMA),
    (json.dumps({**GOOD, "occurred_at": "2026-11-28T10:00:00"}).encode(), DeadLetterReason.INVALID_EVENT),
    (json.dumps({**GOOD, "user": {**GOOD["user"], "name": "a\nb"}}).encode(), DeadLetterReason.INVALID_EVENT),
    (json.dumps({**GOOD, "user": {**GOOD["user"], "email": "x"}}).encode(), DeadLetterReason.INVALID_EVENT),
])
def test_bad_bodies_are_permanent_with_a_reason(body, reason):
    with pytest.raises(PermanentError) as exc:
        parse_event(body)
    assert exc.value.reason is reason and exc.value.message
