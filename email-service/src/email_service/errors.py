"""Failure classes, and the one place that decides which class an exception belongs to.

- PermanentError: retrying cannot help (bad payload, SMTP 5xx for this recipient): dead-letter at once.
- TransientError: it may work later (SMTP 4xx, connection refused/reset, timeouts): retry through a delay queue.
"""

from __future__ import annotations

import asyncio
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


# Replies that mean "our configuration is wrong", not "this mail is bad": retrying (and alerting) is right,
# dead-lettering every mail because of a wrong password or sender would not be.
_CONFIGURATION_CODES = frozenset({530, 534, 535, 538})


def classify(exc: BaseException) -> PermanentError | TransientError:
    """Turn anything a send raised into a PermanentError or a TransientError."""
    if isinstance(exc, PermanentError | TransientError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
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
