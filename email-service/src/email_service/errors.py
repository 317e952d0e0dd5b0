"""Failure classes, and the one place that decides which class an exception belongs to.

- PermanentError: retrying cannot help (bad payload, SMTP 5xx for this recipient): dead-letter at once.
- TransientError: it may work later (SMTP 4xx, connection refused/reset, timeouts): retry through a delay queue.
- Throttled (a TransientError): the provider says "slow down", or this process held the mail back for want of
  send budget. Not a failed attempt: the mail is deferred (tried again in seconds, its attempt number unchanged)
  until DELIVERY_DEADLINE_SECONDS, and the sender slows down (throttle.py).

What counts as throttling is decided here and nowhere else (`throttling_reply`).
"""

from __future__ import annotations

import asyncio
import enum
import re
import ssl

import aiosmtplib

from .wire import DeadLetterReason


class DeliveryFailure(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermanentError(DeliveryFailure):
    def __init__(self, reason: DeadLetterReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TransientError(DeliveryFailure):
    pass


class ClaimedElsewhere(TransientError):
    """Another consumer is sending this very event right now (dedup claim). Wait and look again; this is not a
    failed attempt, so it does not use up MAX_ATTEMPTS (the claim expires by itself if its holder died)."""


class Stage(enum.StrEnum):
    """Where in the SMTP exchange a provider throttled (the `stage` label of email_smtp_throttled_total)."""

    CONNECT = "connect"  # the greeting, or the connection refused or closed while others are open
    HELO = "helo"  # EHLO/HELO, STARTTLS, AUTH
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


class Throttled(TransientError):
    """The provider asked us to slow down (`stage` set), or the send budget had no room in time (`stage` None).

    `limits_connections`: the provider caps connections rather than the mail rate: a reply at the greeting or to
    EHLO/STARTTLS/AUTH, or one that says so at a later stage (Microsoft 365 answers the connection over its cap
    `432 4.3.2 Concurrent connections limit exceeded.` at MAIL)."""

    def __init__(self, message: str, stage: Stage | None) -> None:
        super().__init__(message)
        self.stage = stage
        self.limits_connections = stage in (Stage.CONNECT, Stage.HELO) or (
            stage is not None and bool(_CONNECTION_LIMIT_TEXT.search(message)))


# Enhanced status codes (RFC 3463) that providers use for rate and connection limits: 4.7.x security/policy
# (SES 454 4.7.0, Google 421 4.7.0), 4.3.2 system not accepting messages (Microsoft 432 4.3.2), 4.2.1 mailbox
# disabled for now (Google 450 4.2.1 "Peak SMTP relay limit exceeded").
_THROTTLING_ENHANCED = re.compile(r"^\s*4\.(?:7\.\d{1,3}|3\.2|2\.1)\b")
_THROTTLING_TEXT = re.compile(
    r"\brate\b|throttl|too many (?:connections|messages|mails|recipients|sessions)|try again later|limit exceeded"
    r"|slow down|concurrent connections", re.IGNORECASE)
_THROTTLING_CODES = frozenset({450, 451, 452, 454})
_CONNECTION_LIMIT_TEXT = re.compile(r"connections|concurrent|sessions", re.IGNORECASE)


def throttling_reply(code: int, text: str) -> bool:
    """True when an SMTP reply means "slow down" rather than "this failed": 421 (service closing, the classic
    per-client limit reply) and 432 at any stage; 450/451/452/454 with a throttling enhanced code or text."""
    if code in (421, 432):
        return True
    return code in _THROTTLING_CODES and bool(_THROTTLING_ENHANCED.match(text) or _THROTTLING_TEXT.search(text))


def _stage_of(exc: aiosmtplib.SMTPResponseException) -> Stage:
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return Stage.CONNECT
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return Stage.MAIL
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return Stage.RCPT
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return Stage.DATA
    return Stage.HELO


# Replies that mean "our configuration is wrong", not "this mail is bad": retrying (and alerting) is right,
# dead-lettering every mail because of a wrong password or sender would not be.
_CONFIGURATION_CODES = frozenset({530, 534, 535, 538})


def classify(exc: BaseException) -> PermanentError | TransientError:
    """Turn anything a send raised into a PermanentError or a TransientError."""
    if isinstance(exc, PermanentError | TransientError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPResponseException) and throttling_reply(exc.code, exc.message):
        return Throttled(f"SMTP {exc.code}: {exc.message}", _stage_of(exc))
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        throttled = [r for r in exc.recipients if throttling_reply(r.code, r.message)]
        if throttled:
            return Throttled(f"recipient deferred: {throttled[0].code} {throttled[0].message}", Stage.RCPT)
        codes = [r.code for r in exc.recipients]
        worst = max(codes) if codes else 550
        text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        if worst >= 500 and all(code >= 500 for code in codes):
            return PermanentError(DeadLetterReason.SMTP_REJECTED, f"recipient refused: {text}")
        return TransientError(f"recipient deferred: {text}")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused | aiosmtplib.SMTPAuthenticationError):
        return TransientError(f"SMTP {exc.code} (configuration: sender or credentials): {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if 500 <= exc.code < 600 and exc.code not in _CONFIGURATION_CODES:
            return PermanentError(DeadLetterReason.SMTP_REJECTED, f"SMTP {exc.code}: {exc.message}")
        return TransientError(f"SMTP {exc.code}: {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError | TimeoutError):
        return TransientError(f"timeout: {exc.__class__.__name__}")
    if isinstance(exc, ssl.SSLError | aiosmtplib.SMTPException | ConnectionError | OSError):
        return TransientError(f"{exc.__class__.__name__}: {exc}")
    # Anything else is a bug in this service; retrying keeps the mail while someone looks.
    return TransientError(f"unexpected {exc.__class__.__name__}: {exc}")
