"""Producer-side validation and the event it builds (pure logic, no network)."""

from __future__ import annotations

import json
import uuid

import pytest

from producer_service.events import InvalidSignup, Signup, UserSignedUp, event_id_for, parse_signup


def fields(exc: pytest.ExceptionInfo) -> set[str]:
    return {e.field for e in exc.value.errors}


def test_valid_signup_is_normalised():
    signup = parse_signup({"email": "Ada@Example.COM", "name": "  Ada Lovelace ", "locale": "zh-CN"})
    assert signup == Signup(email="Ada@example.com", name="Ada Lovelace", locale="zh-CN")


def test_locale_defaults_to_english():
    assert parse_signup({"email": "ada@example.com", "name": "Ada"}).locale == "en"


@pytest.mark.parametrize("name", ["Ada\r\nBcc: x@y.z", "Ada\x00", "Ada\u2028x", "Ada\x1b[31m", "Ada\u0085x"])
def test_control_characters_in_the_name_are_refused(name):
    with pytest.raises(InvalidSignup) as exc:
        parse_signup({"email": "ada@example.com", "name": name})
    assert fields(exc) == {"name"}


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(InvalidSignup) as exc:
        parse_signup({"email": "nope", "name": "", "locale": "de", "role": "admin"})
    assert fields(exc) == {"email", "name", "locale", "role"}


def test_non_ascii_local_parts_are_refused_but_idn_domains_are_encoded():
    with pytest.raises(InvalidSignup):
        parse_signup({"email": "用户@example.com", "name": "Ada"})
    assert parse_signup({"email": "ada@bücher.example", "name": "Ada"}).email == "ada@xn--bcher-kva.example"


def test_event_ids_from_the_same_idempotency_key_are_equal():
    assert event_id_for("k1") == event_id_for("k1") != event_id_for("k2")
    assert uuid.UUID(event_id_for(None)).version == 4


def test_event_body_is_compact_utf8_json():
    event = UserSignedUp.new(Signup("ada@example.com", "王小明", "zh-CN"))
    body = event.to_json()
    assert "王小明".encode() in body
    data = json.loads(body)
    assert data["occurred_at"].endswith("Z") and data["schema_version"] == 1
