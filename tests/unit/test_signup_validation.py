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


from email_validator import EmailNotValidError, validate_email  # noqa: E402
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from producer_service.events import _PLAIN_EMAIL, FieldError, _check_email  # noqa: E402

_atoms = st.text(alphabet="abcXYZ019_%+-.!#~", min_size=1, max_size=12)
_labels = st.text(alphabet="abcxyz09-", min_size=1, max_size=12)


@settings(max_examples=1500, deadline=None)
@given(local=_atoms, labels=st.lists(_labels, min_size=1, max_size=3),
       tld=st.sampled_from(["com", "org", "cn", "test", "local", "c", "x1", "COM", "arpa", "onion"]))
@example(local="ada", labels=["example"], tld="com")
@example(local="a..b", labels=["example"], tld="com")
@example(local="a", labels=["xn--bcher-kva"], tld="example")
def test_fast_email_path_agrees_with_email_validator(local, labels, tld):
    address = f"{local}@{'.'.join(labels)}.{tld}"
    errors: list[FieldError] = []
    ours = _check_email(address, errors)
    try:
        theirs = validate_email(address, check_deliverability=False, allow_smtputf8=False).ascii_email
    except EmailNotValidError:
        theirs = None
    if _PLAIN_EMAIL.fullmatch(address) and ours is not None:
        assert ours == theirs, address  # whatever the fast path accepts, the full check accepts identically
    assert ours == theirs, address  # and overall the verdict is email_validator's


def test_duplicate_keys_are_refused_naming_the_key():
    import json

    from producer_service.events import DuplicateKey, refuse_duplicate_keys

    with pytest.raises(DuplicateKey) as caught:
        json.loads('{"name": "A", "email": "a@example.com", "name": "B"}', object_pairs_hook=refuse_duplicate_keys)
    assert caught.value.key == "name"
    assert json.loads('{"user": {"a": 1}, "a": 2}', object_pairs_hook=refuse_duplicate_keys) == {"user": {"a": 1},
                                                                                                 "a": 2}


def test_only_the_configured_locales_are_accepted():
    assert parse_signup({"email": "a@example.com", "name": "A"}, ("de", "en")).locale == "de"
    with pytest.raises(InvalidSignup, match="must be one of de, en"):
        parse_signup({"email": "a@example.com", "name": "A", "locale": "zh-CN"}, ("de", "en"))


def test_forbidden_characters_are_exactly_the_unicode_categories_refused() -> None:
    """The one regular expression of events.py stands for: Cc, Cs, Zl, Zp and U+FEFF, over every code point."""
    import unicodedata

    from producer_service.events import _forbidden_character

    for code in range(0x110000):
        ch = chr(code)
        expected = unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch == "\ufeff"
        assert (_forbidden_character(f"ab{ch}") == ch) is expected, hex(code)
