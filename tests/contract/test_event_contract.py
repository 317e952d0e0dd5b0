"""The producer owns the user.signed_up contract; the email service keeps a copy. These fail the moment they drift."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_service.errors import PermanentError
from email_service.events import parse_event
from producer_service.events import LOCALES, Signup, UserSignedUp

SCHEMA_FILE = "user_signed_up.v1.schema.json"


def schema_of(package: str) -> bytes:
    return resources.files(package).joinpath("contract", SCHEMA_FILE).read_bytes()


def test_the_email_service_copy_is_identical_to_the_producers_schema():
    assert schema_of("email_service") == schema_of("producer_service"), (
        "email-service's contract copy drifted: copy producer-service/src/producer_service/contract/"
        f"{SCHEMA_FILE} to email-service/src/email_service/contract/ and adapt email_service/events.py")


VALIDATOR = jsonschema.Draft202012Validator(json.loads(schema_of("producer_service")),
                                            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

names = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=100) \
    .map(str.strip).filter(bool)
emails = st.from_regex(r"[a-z0-9._%+-]{1,20}@[a-z0-9-]{1,20}\.(com|org|cn)", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(email=emails, name=names, locale=st.sampled_from(LOCALES))
def test_every_event_the_producer_writes_fits_the_schema_and_the_consumer_reads_it(email, name, locale):
    event = UserSignedUp.new(Signup(email=email, name=name, locale=locale))
    body = event.to_json()
    VALIDATOR.validate(json.loads(body))
    parsed = parse_event(body)
    assert (parsed.event_id, parsed.email, parsed.name, parsed.locale) == (event.event_id, email, name, locale)


def _event(**changes) -> dict:
    body = json.loads(UserSignedUp.new(Signup("ada@example.com", "Ada", "en")).to_json())
    for key, value in changes.items():
        if key.startswith("user_"):
            body["user"][key[5:]] = value
        elif value is ...:
            del body[key]
        else:
            body[key] = value
    return body


@pytest.mark.parametrize("body", [
    _event(schema_version=2), _event(event_type="user.deleted"), _event(event_id="not-a-uuid"),
    _event(occurred_at="yesterday"), _event(user_locale="fr_FR"), _event(user_name=""), _event(user_name="a\r\nb"),
    _event(user_email="no-at-sign"), _event(extra=1), _event(user=...), _event(event_id=...),
], ids=["version", "type", "event-id", "occurred-at", "locale", "empty-name", "crlf-name", "email", "extra",
        "no-user", "no-event-id"])
def test_schema_and_consumer_reject_the_same_bodies(body):
    assert not VALIDATOR.is_valid(body)
    with pytest.raises(PermanentError):
        parse_event(json.dumps(body).encode())
