"""The OpenAPI description names the locales the producer accepts: the shipped file the default LOCALES, the served
document the configured ones (the contract's `locale` is a BCP 47 tag from LOCALES)."""

from __future__ import annotations

import json

from producer_service import openapi
from producer_service.events import LOCALES, parse_signup


def test_the_shipped_spec_lists_the_default_locales():
    schema = openapi.locale_schema(openapi.SPEC)
    assert (schema["enum"], schema["default"]) == (list(LOCALES), LOCALES[0]), (
        "producer-service/src/producer_service/openapi.json drifted from events.LOCALES: update its Signup.locale")


def test_the_served_spec_lists_the_configured_locales_and_the_signup_accepts_exactly_those():
    configured = ("de-CH", "en", "pt-BR")
    schema = openapi.locale_schema(json.loads(openapi.document(configured)))
    assert (schema["enum"], schema["default"]) == (list(configured), "de-CH")
    for locale in schema["enum"]:
        assert parse_signup({"email": "a@example.com", "name": "A", "locale": locale}, configured).locale == locale
    assert openapi.locale_schema(openapi.SPEC)["enum"] == list(LOCALES)  # the shipped one is left as it was
