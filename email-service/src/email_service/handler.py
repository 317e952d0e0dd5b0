"""What happens to one message: send the welcome email, or retry it later, or dead-letter it with the reason.

The message is acked only after the SMTP server accepted the mail, or after its retry, deferred or dead-letter copy
was confirmed by the broker. If that publish fails (the channel died) the message is left unacked: RabbitMQ
delivers it again. Nothing here ever requeues a message directly.

A throttled mail is deferred: its copy goes to the deferral queue with the attempt number unchanged, and only the
delivery deadline (counted from its first deferral) ends that with a dead letter.

With REDIS_URL set, each step is written to the event's delivery record (status.py): `sending` with the claim,
`sent` after the SMTP server accepted, the failed state (retrying, deferred, dead_lettered) before the copy is
published, so the claim is dropped before the copy can come back. A record write never fails the message.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import cast

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, HeadersType

from .dedup import Claim
from .errors import ClaimedElsewhere, PermanentError, Throttled, TransientError, classify
from .events import event_id_of, parse_event
from .logs import correlation_id
from .mailer import SmtpPool
from .metrics import EmailMetrics
from .retry import RetryPolicy, attempt_of, deferred_since
from .status import EVENT_ID, Accepted, DeliveryRecords, DeliveryStatus
from .templates import WelcomeEmail
from .topology import DEAD_LETTER_QUEUE
from .wire import (
    ATTEMPT_NUMBER_HEADER,
    ATTEMPTS_MADE_HEADER,
    CORRELATION_ID_HEADER,
    DEAD_LETTERED_AT_HEADER,
    DEFERRED_SINCE_HEADER,
    LAST_ERROR_HEADER,
    LEGACY_EVENT_ID_HEADER,
    REASON_HEADER,
    REPLAY_COUNT_HEADER,
    SUPERSEDED_HEADERS,
    DeadLetterReason,
    copy_marks,
    header_text,
    original_message_id,
)

log = logging.getLogger("email_service.handler")

MAX_BODY_BYTES = 64 * 1024
MAX_ERROR_LENGTH = 1000


def wire_safe(value: object) -> object:
    """A header value as pamqp can encode it again. What it decoded from another client may not be: a long string
    that is not UTF-8 comes back as bytes, a double as a float that may not fit the 32-bit float pamqp writes, an
    integer may exceed 64 bits."""
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, float):
        try:
            struct.pack(">f", value)
        except OverflowError:
            return repr(value)
        return value
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return str(value)
    if isinstance(value, dict):
        return {key: wire_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [wire_safe(item) for item in value]
    return value


def _event_id(message: AbstractIncomingMessage) -> str | None:
    """The event id a failure's log line names: the body's when it parses, else the message_id it came with."""
    return event_id_of(message.body) or original_message_id(message.message_id, message.headers)


def _rfc3339(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MessageHandler:
    def __init__(self, renderer: WelcomeEmail, pool: SmtpPool, policy: RetryPolicy, metrics: EmailMetrics,
                 records: DeliveryRecords | None = None) -> None:
        self.renderer = renderer
        self.pool = pool
        self.policy = policy
        self.metrics = metrics
        self.records = records
        # Called when a message could be neither acked nor moved: the consumer then recycles its channel, so
        # RabbitMQ redelivers the message instead of it sitting unacked in this process.
        self.on_channel_broken: Callable[[], None] = lambda: None
        self.in_progress = 0
        self._sent = metrics.messages.labels("sent")  # looked up once: this one counts every mail
        metrics.in_progress.set_function(lambda: self.in_progress)

    async def deliver(self, body: bytes, attempt: int = 1, legacy_event_id: str | None = None, *,
                      replayed: bool = False) -> None:
        """Send the mail for one message body; raise PermanentError/TransientError (or what the send raised)."""
        if len(body) > MAX_BODY_BYTES:
            raise PermanentError(DeadLetterReason.INVALID_EVENT, f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        event = parse_event(body)
        if self.records is not None:
            claim = await self.records.claim(event.event_id, attempt=attempt, locale=event.locale,
                                             legacy_event_id=legacy_event_id)
            if claim is Claim.DELIVERED:
                self.metrics.messages.labels("duplicate").inc()
                log.info("duplicate event skipped", extra={"event_id": event.event_id, "outcome": "duplicate"})
                return
            if claim is Claim.IN_PROGRESS:
                raise ClaimedElsewhere("another consumer is delivering this event right now")
        mail = self.renderer.render(event)
        started = time.perf_counter()
        try:
            waited, reply = await self.pool.send(mail)
        finally:  # failed exchanges count too: a slow or timing-out server must show on the SMTP latency panel
            self.metrics.send_seconds.observe(time.perf_counter() - started)
        self.metrics.budget_wait_seconds.observe(waited)
        if self.records is not None:
            await self.records.sent(event.event_id, Accepted(reply, mail.message_id))
        self.metrics.observe_end_to_end(time.time() - event.occurred_at.timestamp(), replayed=replayed,
                                        longest=self.policy.longest_delivery_seconds)
        self._sent.inc()
        log.info("mail sent", extra={"event_id": event.event_id, "outcome": "sent", "message_id": mail.message_id})

    async def _record_failure(self, message: AbstractIncomingMessage, status: DeliveryStatus, attempt: int,
                              failure: PermanentError | TransientError, *, next_tier: str | None = None,
                              reason: DeadLetterReason | None = None) -> None:
        """Write the failed state (and drop the claim) before the copy is published; never for a message whose
        event another consumer holds (ClaimedElsewhere), nor for one without an event id."""
        event_id = message.message_id
        if self.records is None or isinstance(failure, ClaimedElsewhere) or not EVENT_ID.fullmatch(event_id or ""):
            return
        await self.records.failed(event_id or "", status, attempt=attempt, error=failure.message,
                                  next_tier=next_tier, reason=reason.value if reason else None)

    async def __call__(self, message: AbstractIncomingMessage, exchange: AbstractExchange) -> None:
        headers = message.headers or {}
        cid = header_text(headers.get(CORRELATION_ID_HEADER)) or message.correlation_id
        token = correlation_id.set(str(cid)[:128] if cid else None)
        attempt = attempt_of(headers)
        if REPLAY_COUNT_HEADER in headers and ATTEMPT_NUMBER_HEADER not in headers:
            self.metrics.replayed.inc()
        legacy_id = header_text(headers.get(LEGACY_EVENT_ID_HEADER))
        self.in_progress += 1
        try:
            try:
                await self.deliver(message.body, attempt, legacy_id if legacy_id and EVENT_ID.fullmatch(legacy_id)
                                   else None, replayed=REPLAY_COUNT_HEADER in headers)
            except Exception as exc:  # noqa: BLE001 - every failure is classified, none may kill the consumer
                failure = classify(exc)
                try:
                    await self._after_failure(message, exchange, attempt, failure)
                except Exception as bug:  # noqa: BLE001 - a message must never stay unacked in this process
                    await self._reject_to_dead_letters(message, bug)
            else:
                await self._ack(message)
        finally:
            self.in_progress -= 1
            correlation_id.reset(token)

    async def _after_failure(self, message: AbstractIncomingMessage, exchange: AbstractExchange, attempt: int,
                             failure: PermanentError | TransientError) -> None:
        event_id = _event_id(message)
        if isinstance(failure, Throttled):
            await self._defer(message, exchange, attempt, failure)
            return
        waiting = isinstance(failure, ClaimedElsewhere)  # not an attempt: the attempt count stays as it is
        if waiting or (isinstance(failure, TransientError) and self.policy.should_retry(attempt)):
            tier = self.policy.tier_for(attempt)
            queue = self.policy.tier_queue(tier)
            extra = {ATTEMPT_NUMBER_HEADER: attempt if waiting else attempt + 1,
                     LAST_ERROR_HEADER: failure.message[:MAX_ERROR_LENGTH]}
            await self._record_failure(message, DeliveryStatus.RETRYING, attempt, failure, next_tier=queue)
            if await self._republish(message, exchange, queue, extra):
                self.metrics.messages.labels("retried").inc()
                log.warning("delivery failed, retry scheduled", extra={
                    "event_id": event_id, "attempt": attempt, "outcome": "retried", "retry_queue": queue,
                    "error": failure.message[:MAX_ERROR_LENGTH]})
            return
        reason = failure.reason if isinstance(failure, PermanentError) else DeadLetterReason.RETRIES_EXHAUSTED
        await self._dead_letter(message, exchange, attempt, reason, failure)

    async def _defer(self, message: AbstractIncomingMessage, exchange: AbstractExchange, attempt: int,
                     failure: Throttled) -> None:
        """Throttled: try again after the deferral delay, the attempt not counted; past the deadline, dead-letter."""
        now = datetime.now(timezone.utc)
        since = deferred_since(message.headers) or now
        if self.policy.deadline_passed(since, now):
            await self._dead_letter(message, exchange, attempt, DeadLetterReason.DEADLINE_EXCEEDED, failure)
            return
        extra: dict[str, object] = {ATTEMPT_NUMBER_HEADER: attempt, DEFERRED_SINCE_HEADER: _rfc3339(since),
                                    LAST_ERROR_HEADER: failure.message[:MAX_ERROR_LENGTH]}
        await self._record_failure(message, DeliveryStatus.DEFERRED, attempt, failure,
                                   next_tier=self.policy.defer_queue)
        if await self._republish(message, exchange, self.policy.defer_queue, extra):
            self.metrics.messages.labels("deferred").inc()
            log.info("throttled, mail deferred", extra={
                "event_id": _event_id(message), "attempt": attempt, "outcome": "deferred",
                "stage": failure.stage.value if failure.stage else "budget", "error": failure.message[:200]})

    async def _dead_letter(self, message: AbstractIncomingMessage, exchange: AbstractExchange, attempt: int,
                           reason: DeadLetterReason, failure: PermanentError | TransientError) -> None:
        event_id = _event_id(message)
        extra: dict[str, object] = {
            REASON_HEADER: reason.value,
            LAST_ERROR_HEADER: failure.message[:MAX_ERROR_LENGTH],
            ATTEMPTS_MADE_HEADER: attempt,
            DEAD_LETTERED_AT_HEADER: _rfc3339(datetime.now(timezone.utc)),
        }
        await self._record_failure(message, DeliveryStatus.DEAD_LETTERED, attempt, failure, reason=reason)
        if await self._republish(message, exchange, DEAD_LETTER_QUEUE, extra):
            self.metrics.messages.labels("dead_lettered").inc()
            self.metrics.dead_letters.labels(reason.value).inc()
            log.error("message dead-lettered", extra={
                "event_id": event_id, "attempt": attempt, "outcome": "dead_lettered", "reason": reason.value,
                "error": failure.message[:MAX_ERROR_LENGTH]})

    async def _republish(self, message: AbstractIncomingMessage, exchange: AbstractExchange, queue: str,
                         extra_headers: dict[str, object]) -> bool:
        """Publish a copy (same body and properties, more headers) with a confirm, then ack the original."""
        kept = {k: v for k, v in (message.headers or {}).items() if k not in SUPERSEDED_HEADERS}
        copy = aio_pika.Message(
            body=message.body,
            headers=cast(HeadersType, wire_safe({**kept, **copy_marks(message.message_id), **extra_headers})),
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            app_id=message.app_id,
        )
        try:
            await exchange.publish(copy, queue, mandatory=True, timeout=30)
        except (asyncio.TimeoutError, aio_pika.exceptions.AMQPError, RuntimeError, OSError) as exc:
            # Not acked: RabbitMQ redelivers the original once this channel is gone. Nothing is lost.
            log.warning("could not move message, leaving it to redelivery",
                        extra={"event_id": message.message_id, "target": queue, "error": repr(exc)[:200]})
            self.on_channel_broken()
            return False
        return await self._ack(message)

    async def _reject_to_dead_letters(self, message: AbstractIncomingMessage, bug: Exception) -> None:
        """Last resort when no copy could be made: reject without requeue, so RabbitMQ dead-letters the original
        itself (x-first-death-reason: rejected), unchanged."""
        log.error("could not retry or dead-letter the message, rejecting it to the dead-letter queue",
                  extra={"event_id": _event_id(message), "error": repr(bug)[:300]}, exc_info=bug)
        try:
            await message.reject(requeue=False)
        except (aio_pika.exceptions.AMQPError, RuntimeError, OSError):
            self.on_channel_broken()

    async def _ack(self, message: AbstractIncomingMessage) -> bool:
        try:
            await message.ack()
        except (aio_pika.exceptions.AMQPError, RuntimeError, OSError) as exc:
            log.warning("ack failed, the broker will redeliver the message",
                        extra={"event_id": message.message_id, "error": repr(exc)[:200]})
            self.on_channel_broken()
            return False
        return True
