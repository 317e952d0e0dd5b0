"""Throttling replies are told apart from failures in one place, and a process slows down on them (AIMD)."""

from __future__ import annotations

import aiosmtplib
import pytest

from email_service.errors import Stage, Throttled, TransientError, classify, throttling_reply
from email_service.throttle import DECREASE, SendGovernor


@pytest.mark.parametrize("code,text", [
    (454, "4.7.0 Throttling failure: Maximum sending rate exceeded."),  # Amazon SES
    (450, "4.2.1 Peak SMTP relay limit exceeded"),  # Google
    (421, "4.7.0 Try again later, closing connection."),  # Google
    (432, "4.3.2 Concurrent connections limit exceeded."),  # Microsoft 365
    (450, "4.7.1 Error: too much mail from 127.0.0.1"),  # Postfix anvil
    (421, "4.7.0 relay.test Error: too many connections from 127.0.0.1"),  # Postfix anvil
    (451, "Too many messages, slow down"),
    (452, "rate limit exceeded"),
])
def test_provider_throttling_replies_are_throttling(code, text):
    assert throttling_reply(code, text)


@pytest.mark.parametrize("code,text", [
    (451, "4.3.0 temporary local problem"), (450, "4.2.0 mailbox busy"), (452, "4.3.1 insufficient storage"),
    (451, "a separate problem"),  # "rate" only as a word
    (550, "5.7.1 rate limited for good"), (554, "too many recipients"),  # 5xx: permanent, never throttling
])
def test_other_replies_are_not_throttling(code, text):
    assert not throttling_reply(code, text)


@pytest.mark.parametrize("exc,stage", [
    (aiosmtplib.SMTPConnectResponseError(421, "4.7.0 Too many connections"), Stage.CONNECT),
    (aiosmtplib.SMTPHeloError(432, "4.3.2 Concurrent connections limit exceeded."), Stage.HELO),
    (aiosmtplib.SMTPSenderRefused(450, "4.7.1 Error: too much mail", "a@b.c"), Stage.MAIL),
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(450, "4.2.1 Peak SMTP relay limit exceeded",
                                                                       "a@b.c")]), Stage.RCPT),
    (aiosmtplib.SMTPDataError(454, "4.7.0 Throttling failure: Maximum sending rate exceeded."), Stage.DATA),
])
def test_throttling_is_classified_with_its_stage(exc, stage):
    failure = classify(exc)
    assert isinstance(failure, Throttled) and failure.stage is stage


def test_a_plain_4xx_stays_an_attempt_counted_failure():
    failure = classify(aiosmtplib.SMTPDataError(451, "4.3.0 temporary local problem"))
    assert isinstance(failure, TransientError) and not isinstance(failure, Throttled)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def throttled(stage: Stage, text: str = "421 4.7.0 Try again later") -> Throttled:
    return Throttled(text, stage)


async def test_connection_throttling_halves_the_limit_once_per_reaction_time_and_recovers_once_per_second():
    clock = Clock()
    governor = SendGovernor(16, clock=clock)
    governor.throttled(throttled(Stage.CONNECT))
    governor.throttled(throttled(Stage.CONNECT))  # a burst of replies to exchanges already under way counts once
    assert governor.limit == 8 and governor.rate is None
    clock.now += 1.0
    governor.throttled(throttled(Stage.HELO))
    assert governor.limit == 4
    for _ in range(8):
        governor.accepted()
    assert governor.limit == 4  # no growth within the reaction time of the cut
    clock.now += 1.0
    for _ in range(4):
        governor.accepted()
    assert governor.limit == 5  # one more per `limit` accepted mails
    for _ in range(5):
        governor.accepted()
    assert governor.limit == 5  # and at most one a second: a cap is probed once a second


async def test_a_connection_cap_sets_the_limit_to_the_connections_the_provider_admitted():
    clock = Clock()
    governor = SendGovernor(16, clock=clock)
    governor.throttled(throttled(Stage.MAIL, "432 4.3.2 Concurrent connections limit exceeded."), admitted=3)
    assert governor.limit == 3 and governor.rate is None  # Microsoft's cap reply at MAIL is a connection cap


async def test_rate_throttling_paces_below_what_was_started_and_grows_back():
    clock = Clock()
    governor = SendGovernor(4, clock=clock)
    for _ in range(20):  # 20 exchanges started within the rate window of 2 s: 10 per second
        async with governor.slot(max_wait=1):
            pass
    governor.throttled(throttled(Stage.DATA, "454 4.7.0 Throttling failure: Maximum sending rate exceeded."))
    assert governor.limit == 4 and governor.rate == pytest.approx(10 * DECREASE)
    clock.now += 5
    async with governor.slot(max_wait=1):
        pass
    assert governor.rate > 10 * DECREASE


async def test_no_slot_within_the_wait_raises_throttled_without_a_stage():
    governor = SendGovernor(1)
    async with governor.slot(max_wait=1):
        with pytest.raises(Throttled) as raised:
            async with governor.slot(max_wait=0.05):
                pass
    assert raised.value.stage is None
