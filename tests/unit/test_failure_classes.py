"""One place decides: permanent (dead-letter now) or transient (retry later)."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from email_service.errors import DeadLetterReason, PermanentError, Throttled, TransientError, classify
from email_service.retry import RetryPolicy, attempt_of
from email_service.wire import ATTEMPT_NUMBER_HEADER, LEGACY_ATTEMPT_NUMBER_HEADER


@pytest.mark.parametrize("exc,kind", [
    (aiosmtplib.SMTPResponseException(451, "try later"), TransientError),
    (aiosmtplib.SMTPResponseException(421, "closing"), Throttled),
    (aiosmtplib.SMTPResponseException(554, "rejected"), PermanentError),
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b.c")]), PermanentError),
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(450, "mailbox busy", "a@b.c")]), TransientError),
    (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), TransientError),
    (aiosmtplib.SMTPSenderRefused(550, "sender rejected", "x@y.z"), TransientError),
    (aiosmtplib.SMTPServerDisconnected("gone"), TransientError),
    (aiosmtplib.SMTPConnectError("refused"), TransientError),
    (aiosmtplib.SMTPTimeoutError("slow"), TransientError),
    (ConnectionResetError(), TransientError),
    (ConnectionRefusedError(), TransientError),
    (asyncio.TimeoutError(), TransientError),
    (ValueError("a bug"), TransientError),
])
def test_classification(exc, kind):
    assert isinstance(classify(exc), kind)


def test_smtp_5xx_is_dead_lettered_as_smtp_rejected():
    failure = classify(aiosmtplib.SMTPResponseException(550, "5.1.1 unknown user"))
    assert failure.reason is DeadLetterReason.SMTP_REJECTED and "550" in failure.message


def test_retry_tiers_grow_and_cap():
    policy = RetryPolicy(max_attempts=7, delays=(1, 5, 30))
    assert [policy.tier_for(a) for a in range(1, 7)] == [0, 1, 2, 2, 2, 2]
    assert policy.tier_queue(0) == "email.welcome.retry.1s" and policy.tier_queue(2) == "email.welcome.retry.30s"
    assert policy.should_retry(6) and not policy.should_retry(7)


@pytest.mark.parametrize("headers,attempt", [
    (None, 1), ({}, 1), ({ATTEMPT_NUMBER_HEADER: 3}, 3), ({ATTEMPT_NUMBER_HEADER: b"2"}, 2),
    ({ATTEMPT_NUMBER_HEADER: "junk"}, 1), ({ATTEMPT_NUMBER_HEADER: -5}, 1),
])
def test_attempt_header(headers, attempt):
    assert attempt_of(headers) == attempt


def test_retry_copies_written_before_the_rename_keep_their_attempt_number():
    assert LEGACY_ATTEMPT_NUMBER_HEADER == "x-attempt" != ATTEMPT_NUMBER_HEADER
    assert attempt_of({LEGACY_ATTEMPT_NUMBER_HEADER: 4}) == 4
    assert attempt_of({LEGACY_ATTEMPT_NUMBER_HEADER: b"3"}) == 3
    assert attempt_of({LEGACY_ATTEMPT_NUMBER_HEADER: 4, ATTEMPT_NUMBER_HEADER: 2}) == 2  # the new name wins
