"""The wire contract of the email service: every header it reads or writes on a message, and every reason a
message can sit in the dead-letter queue for. (`contract/` beside this module is the event body's JSON schema.)

Operators, the `dlq` commands, dashboards and the tests read these names, and messages written by an older
version may wait in a queue for days: a header is renamed only with its old name kept readable here.

    a delivery        x-correlation-id (from the producer), x-attempt-number (absent on the first delivery),
                      x-legacy-event-id (from the producer, when the Idempotency-Key id is keyed with a secret)
    a retry copy      the same, x-attempt-number + 1, x-last-error
    a deferred copy   the same, x-attempt-number unchanged, x-last-error, x-deferred-since (kept from the first
                      deferral; the delivery deadline counts from it)
    a dead letter     x-dead-letter-reason, x-last-error, x-attempts (attempts made), x-dead-lettered-at
                      or, dead-lettered by RabbitMQ itself, x-first-death-reason and the other x-death headers
    a replayed copy   x-replay-count; the retry and dead-letter headers above are removed
    any copy          x-message-id-absent when the message first came without a message_id (see below)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

CORRELATION_ID_HEADER = "x-correlation-id"  # the producer's request id, carried into every log line
# The event id the producer derived from the same Idempotency-Key before it used a secret (a public namespace):
# the dedup check also looks for that id's delivery (dedup.py), so a client's retry across the upgrade gives one mail.
LEGACY_EVENT_ID_HEADER = "x-legacy-event-id"

# The number of the attempt this delivery is: 1 when absent, written on each retry copy.
ATTEMPT_NUMBER_HEADER = "x-attempt-number"
# The same header's name until it was renamed to tell it apart from x-attempts: retry copies written by an older
# version still carry it, so it is read when ATTEMPT_NUMBER_HEADER is absent, and removed from every new copy.
LEGACY_ATTEMPT_NUMBER_HEADER = "x-attempt"
LAST_ERROR_HEADER = "x-last-error"  # the failure of the last attempt, on retry copies and dead letters
# RFC 3339 (UTC, milliseconds): when the provider first throttled this mail; set on the first deferred copy, kept on
# later ones (deferred or retried) and removed on replay.
DEFERRED_SINCE_HEADER = "x-deferred-since"

REASON_HEADER = "x-dead-letter-reason"  # a DeadLetterReason value
ATTEMPTS_MADE_HEADER = "x-attempts"  # on a dead letter: how many attempts were made
DEAD_LETTERED_AT_HEADER = "x-dead-lettered-at"  # RFC 3339, UTC, milliseconds
REPLAY_COUNT_HEADER = "x-replay-count"  # how many times `email-service dlq replay` moved this message back
# True on every copy of a message that came without a message_id. aiormq gives each publish without one a random id
# (it matches the broker's returns of mandatory publishes to their confirms by it), so a copy cannot go out as the
# original came; this header says its message_id is not the original's, and original_message_id() reads it.
MESSAGE_ID_ABSENT_HEADER = "x-message-id-absent"

# Written by RabbitMQ: when it dead-letters a message itself, and on redeliveries from a quorum queue.
FIRST_DEATH_REASON_HEADER = "x-first-death-reason"  # a BrokerDeadLetterReason value
BROKER_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", FIRST_DEATH_REASON_HEADER,
                  "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count")

# What a copy must not carry over from its original: the attempt number under the name it no longer has.
SUPERSEDED_HEADERS = (LEGACY_ATTEMPT_NUMBER_HEADER,)
# What a replayed message starts without: it is a new first delivery.
CLEARED_ON_REPLAY = (REASON_HEADER, LAST_ERROR_HEADER, ATTEMPTS_MADE_HEADER, DEAD_LETTERED_AT_HEADER,
                     DEFERRED_SINCE_HEADER, ATTEMPT_NUMBER_HEADER, LEGACY_ATTEMPT_NUMBER_HEADER, *BROKER_HEADERS)


class DeadLetterReason(enum.StrEnum):
    """Why this service dead-lettered a message (REASON_HEADER, and the `reason` label of email_dead_letters)."""

    UNDECODABLE = "undecodable"  # not UTF-8 or not JSON
    INVALID_EVENT = "invalid_event"  # JSON, but not the user.signed_up contract
    UNSUPPORTED_SCHEMA = "unsupported_schema"  # an event type or schema_version this service does not know
    SMTP_REJECTED = "smtp_rejected"  # the SMTP server refused the mail for good (5xx)
    RETRIES_EXHAUSTED = "retries_exhausted"  # transient failures until MAX_ATTEMPTS
    DEADLINE_EXCEEDED = "deadline_exceeded"  # throttled (deferred) for longer than DELIVERY_DEADLINE_SECONDS


class BrokerDeadLetterReason(enum.StrEnum):
    """Why RabbitMQ dead-lettered a message itself (FIRST_DEATH_REASON_HEADER); no metric counts these."""

    DELIVERY_LIMIT = "delivery_limit"  # delivered topology.DELIVERY_LIMIT times without an ack or reject
    REJECTED = "rejected"  # rejected without requeue: the handler's last resort when it could make no copy


UNKNOWN_REASON = "unknown"  # a dead letter with neither reason header (put there by hand)
DEAD_LETTER_REASONS = (*DeadLetterReason, *BrokerDeadLetterReason)


def header_text(value: object) -> str | None:
    """A header value as text: AMQP long strings that are not UTF-8 arrive as bytes."""
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)


def dead_letter_reason(headers: Mapping[str, object] | None) -> str:
    """Why a message is in the dead-letter queue: this service's reason, else RabbitMQ's, else UNKNOWN_REASON."""
    headers = headers or {}
    return (header_text(headers.get(REASON_HEADER)) or header_text(headers.get(FIRST_DEATH_REASON_HEADER))
            or UNKNOWN_REASON)


def original_message_id(message_id: str | None, headers: Mapping[str, object] | None) -> str | None:
    """The message_id a message came with: None when it had none (also on copies the AMQP client gave one)."""
    return None if (headers or {}).get(MESSAGE_ID_ABSENT_HEADER) is True else message_id


def copy_marks(message_id: str | None) -> dict[str, bool]:
    """The headers a copy adds so that what the original's properties were stays readable."""
    return {MESSAGE_ID_ABSENT_HEADER: True} if not message_id else {}
