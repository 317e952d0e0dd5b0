"""Pure logic of the delivery status: event ids from an Idempotency-Key, the settings that turn the lookup on,
how a record is shown, the status command's arguments."""

from __future__ import annotations

import argparse
import uuid

import pytest

from email_service.config import Settings as EmailSettings
from email_service.status import shown
from email_service.status_command import window_seconds
from producer_service.config import ConfigError
from producer_service.config import Settings as ProducerSettings
from producer_service.events import event_id_for, legacy_event_id_for

SECRET = b"a-secret-of-enough-length"


def test_keyed_ids_are_stable_per_key_and_secret_and_look_like_uuid_v8():
    one = event_id_for("user-42", SECRET)
    assert one == event_id_for("user-42", SECRET)
    assert one != event_id_for("user-43", SECRET) != event_id_for("user-42", b"another-secret-of-length")
    parsed = uuid.UUID(one)
    assert str(parsed) == one and parsed.version == 8 and parsed.variant == uuid.RFC_4122


def test_without_a_secret_the_id_is_the_former_public_one():
    assert event_id_for("user-42") == legacy_event_id_for("user-42") == str(
        uuid.uuid5(uuid.UUID("6f1c3c55-8f5e-4c53-9a0e-0d1c3b7f2a41"), "user-42"))
    assert event_id_for("user-42", SECRET) != legacy_event_id_for("user-42")
    assert uuid.UUID(event_id_for(None)).version == 4


BASE = {"AMQP_URL": "amqp://guest:guest@localhost:5672/"}


@pytest.mark.parametrize("env, names", [
    ({"STATUS_API_TOKEN": "t" * 20}, "IDEMPOTENCY_SECRET"),
    ({"STATUS_API_TOKEN": "short", "IDEMPOTENCY_SECRET": "s" * 20}, "STATUS_API_TOKEN"),
    ({"IDEMPOTENCY_SECRET": "with spaces in it, long enough"}, "IDEMPOTENCY_SECRET"),
    ({"REDIS_URL": "http://redis:6379/0"}, "REDIS_URL"),
    ({"DELIVERY_STATUS_TTL_SECONDS": "0"}, "DELIVERY_STATUS_TTL_SECONDS"),
])
def test_producer_status_settings_are_checked(env, names):
    with pytest.raises(ConfigError, match=names):
        ProducerSettings.from_env({**BASE, **env})


def test_secrets_stay_out_of_the_repr():
    settings = ProducerSettings.from_env({**BASE, "STATUS_API_TOKEN": "token-" + "t" * 20,
                                          "IDEMPOTENCY_SECRET": "secret-" + "s" * 20})
    assert "token-" not in repr(settings) and "secret-" not in repr(settings)


def test_the_record_outlives_the_dedup_window():
    short = EmailSettings.from_env({**BASE, "DELIVERY_STATUS_TTL_SECONDS": "60"})
    assert short.record_ttl_seconds == short.dedup_ttl_seconds == 7 * 24 * 3600
    no_dedup = EmailSettings.from_env({**BASE, "DELIVERY_STATUS_TTL_SECONDS": "60", "DEDUP_ENABLED": "false"})
    assert no_dedup.record_ttl_seconds == 60
    assert EmailSettings.from_env(BASE).record_ttl_seconds == 30 * 24 * 3600


def test_shown_keeps_known_fields_numbers_as_numbers_and_hides_the_claim():
    raw = {b"status": b"sent", b"attempts": b"2", b"reply_code": b"250", b"claim_until": b"1", b"email": b"x@y.z"}
    assert shown(raw) == {"status": "sent", "attempts": 2, "reply_code": 250}


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800)])
def test_window(text, seconds):
    assert window_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "0h", "1w", "h", "-1h", "1.5h"])
def test_bad_window(text):
    with pytest.raises(argparse.ArgumentTypeError):
        window_seconds(text)
