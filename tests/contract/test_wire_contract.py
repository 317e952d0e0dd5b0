"""The wire contract written out once, literally: header names and reason values that messages in queues, the
runbooks, the dashboards and the alerts depend on. Every other test imports the names from the services."""

from __future__ import annotations

import itertools

import pytest

from email_service import wire
from email_service.wire import BrokerDeadLetterReason, DeadLetterReason
from producer_service import publisher
from producer_service.publisher import PublishFailure

HEADERS = {
    "CORRELATION_ID_HEADER": "x-correlation-id",
    "ATTEMPT_NUMBER_HEADER": "x-attempt-number",
    "LEGACY_ATTEMPT_NUMBER_HEADER": "x-attempt",
    "LAST_ERROR_HEADER": "x-last-error",
    "REASON_HEADER": "x-dead-letter-reason",
    "ATTEMPTS_MADE_HEADER": "x-attempts",
    "DEAD_LETTERED_AT_HEADER": "x-dead-lettered-at",
    "REPLAY_COUNT_HEADER": "x-replay-count",
    "FIRST_DEATH_REASON_HEADER": "x-first-death-reason",
    "MESSAGE_ID_ABSENT_HEADER": "x-message-id-absent",
    "LEGACY_EVENT_ID_HEADER": "x-legacy-event-id",
}
RENAMED = "a header renamed strands the messages already in queues: keep reading the old name (see wire.py)"


@pytest.mark.parametrize("constant,name", HEADERS.items())
def test_header_names_are_the_documented_ones(constant, name):
    assert getattr(wire, constant) == name, f"{constant}: {RENAMED}"


def test_reasons_are_the_documented_ones():
    # The service's reasons are the `reason` label values of email_dead_letters_total.
    assert [r.value for r in DeadLetterReason] == [
        "undecodable", "invalid_event", "unsupported_schema", "smtp_rejected", "retries_exhausted",
        "deadline_exceeded"]
    assert [r.value for r in BrokerDeadLetterReason] == ["delivery_limit", "rejected"]
    assert [r.value for r in PublishFailure] == ["broker_unavailable", "unroutable", "nacked", "confirm_timeout"]


def _one_edit_apart(a: str, b: str) -> bool:
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = sorted((a, b), key=len)
    return len(long) - len(short) == 1 and any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def test_no_two_headers_written_today_are_one_letter_apart():
    written = [name for constant, name in HEADERS.items() if not constant.startswith("LEGACY_")]
    close = [(a, b) for a, b in itertools.combinations(written, 2) if _one_edit_apart(a, b)]
    assert not close, f"easily confused header names: {close}"


def test_copies_drop_the_legacy_attempt_header_and_replays_drop_both():
    assert wire.LEGACY_ATTEMPT_NUMBER_HEADER in wire.SUPERSEDED_HEADERS
    assert {wire.ATTEMPT_NUMBER_HEADER, wire.LEGACY_ATTEMPT_NUMBER_HEADER} <= set(wire.CLEARED_ON_REPLAY)


def test_the_producer_writes_the_correlation_header_the_consumer_reads():
    assert publisher.CORRELATION_ID_HEADER == wire.CORRELATION_ID_HEADER
    assert publisher.LEGACY_EVENT_ID_HEADER == wire.LEGACY_EVENT_ID_HEADER


@pytest.mark.parametrize("headers,reason", [
    ({wire.REASON_HEADER: "smtp_rejected", wire.FIRST_DEATH_REASON_HEADER: "rejected"}, "smtp_rejected"),
    ({wire.FIRST_DEATH_REASON_HEADER: b"delivery_limit"}, BrokerDeadLetterReason.DELIVERY_LIMIT),
    ({}, wire.UNKNOWN_REASON), (None, wire.UNKNOWN_REASON),
])
def test_a_dead_letter_reason_is_ours_then_the_brokers(headers, reason):
    assert wire.dead_letter_reason(headers) == reason
