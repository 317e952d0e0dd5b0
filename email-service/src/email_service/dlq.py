"""Dead-letter tooling: list, replay and purge `email.welcome.dlq`.

All three read the queue with basic.get and manual acks, never more than the messages that were in the queue when
the command started (so they end even while new dead letters arrive):
- list acks nothing: when it closes its channel every message returns to the queue, in its order;
- replay publishes a copy to the work queue, waits for the broker's confirm, and only then acks the dead letter.
  Killed in the middle, it duplicates at worst (the copy was confirmed, the ack not sent) and never loses. With
  --max-replays N a letter already replayed N times is held: left in the queue and reported, so nothing loops for
  ever between the work queue and the dead-letter queue;
- purge acks what matches and prints each message it removed.
Messages a --reason filter does not match are left unacked, so they return to the queue.
With REDIS_URL set, each letter replayed or purged gets that state in its delivery record (status.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import ChannelNotFoundEntity

from .events import event_id_of
from .status import DeliveryRecords, DeliveryStatus
from .topology import DEAD_LETTER_QUEUE, WORK_QUEUE
from .wire import (
    ATTEMPTS_MADE_HEADER,
    CLEARED_ON_REPLAY,
    DEAD_LETTERED_AT_HEADER,
    LAST_ERROR_HEADER,
    REPLAY_COUNT_HEADER,
    copy_marks,
    dead_letter_reason,
    header_text,
    original_message_id,
)


class QueueMissing(Exception):
    pass


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as the commands show it: `event_id` from the body (when it parses as JSON with one),
    `message_id` as the message came (None when it had none, though a copy's AMQP client gave it one)."""

    event_id: str | None
    message_id: str | None
    reason: str
    last_error: str | None
    attempts: int | None
    dead_lettered_at: str | None
    replays: int = 0  # how many times `dlq replay` moved it back before

    @property
    def record_id(self) -> str | None:
        """The event whose delivery record a dlq command updates: the body's event id, else the message id the
        producer set (an undecodable body still has its event's record)."""
        return self.event_id or self.message_id

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> DeadLetter:
        headers = message.headers or {}
        attempts = headers.get(ATTEMPTS_MADE_HEADER)
        replays = headers.get(REPLAY_COUNT_HEADER)
        return cls(event_id=event_id_of(message.body), message_id=original_message_id(message.message_id, headers),
                   reason=dead_letter_reason(headers),
                   last_error=header_text(headers.get(LAST_ERROR_HEADER)),
                   attempts=attempts if isinstance(attempts, int) else None,
                   dead_lettered_at=header_text(headers.get(DEAD_LETTERED_AT_HEADER)),
                   replays=replays if isinstance(replays, int) and replays > 0 else 0)


Reasons = str | tuple[str, ...] | None  # one reason, several, or all
Visit = Callable[[AbstractIncomingMessage, DeadLetter], Awaitable[None]]  # what _scan does with a match


@dataclass
class Report:
    scanned: int = 0
    matched: list[DeadLetter] = field(default_factory=list)
    by_reason: Counter[str] = field(default_factory=Counter)
    moved: int = 0
    failed: int = 0
    held: list[DeadLetter] = field(default_factory=list)  # replayed --max-replays times already: left in the queue


class DeadLetterQueue:
    def __init__(self, url: str, queue: str = DEAD_LETTER_QUEUE, target: str = WORK_QUEUE,
                 records: DeliveryRecords | None = None) -> None:
        self.url = url
        self.queue_name = queue
        self.target = target
        self.records = records

    async def _open(self) -> tuple[aio_pika.abc.AbstractConnection, AbstractChannel, AbstractQueue, int]:
        connection = await aio_pika.connect(self.url, timeout=10,
                                            client_properties={"connection_name": "email-service dlq"})
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            queue = await channel.declare_queue(self.queue_name, passive=True)
        except ChannelNotFoundEntity:
            await connection.close()
            raise QueueMissing(self.queue_name) from None
        return connection, channel, queue, queue.declaration_result.message_count or 0

    async def _scan(self, queue: AbstractQueue, total: int, reason: Reasons, limit: int | None,
                    visit: Visit | None, report: Report) -> None:
        """Get up to `total` messages (what was there at the start); visit those matching, at most `limit`."""
        reasons = (reason,) if isinstance(reason, str) else reason
        for _ in range(total):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            report.scanned += 1
            letter = DeadLetter.of(message)
            report.by_reason[letter.reason] += 1
            if (reasons is None or letter.reason in reasons) and (limit is None or len(report.matched) < limit):
                report.matched.append(letter)
                if visit is not None:
                    await visit(message, letter)

    async def list(self, *, limit: int, reason: Reasons = None) -> Report:
        connection, _, queue, total = await self._open()
        report = Report()
        try:
            await self._scan(queue, total, reason, limit, None, report)
        finally:
            await connection.close()  # nothing acked: every message returns to the queue, in order
        return report

    async def replay(self, *, limit: int | None, reason: Reasons, rate: float, batch: int = 100,
                     dry_run: bool = False, on_moved: Callable[[DeadLetter], None] | None = None,
                     max_replays: int | None = None) -> Report:
        connection, channel, queue, total = await self._open()
        await channel.declare_queue(self.target, passive=True)  # fails clearly if the work queue is missing
        report = Report()
        pending: list[tuple[AbstractIncomingMessage, DeadLetter]] = []
        interval = 1.0 / rate if rate > 0 else 0.0
        started = time.monotonic()

        async def flush() -> None:
            # The record first: once the copy is out, a consumer may write its next state at any moment, and
            # `replayed` must not overwrite it. (A copy that then fails leaves the record at replayed while the
            # letter stays in the dead-letter queue, counted in report.failed.)
            if self.records is not None:
                for _, letter in pending:
                    await self.records.moved(letter.record_id, DeliveryStatus.REPLAYED, replays=letter.replays + 1)
            results = await asyncio.gather(*(self._publish_copy(channel, m) for m, _ in pending),
                                           return_exceptions=True)
            for (message, letter), result in zip(pending, results, strict=True):
                if isinstance(result, BaseException):
                    report.failed += 1  # not acked: it stays in the dead-letter queue
                    continue
                await message.ack()
                report.moved += 1
                if on_moved is not None:
                    on_moved(letter)
            pending.clear()

        async def visit(message: AbstractIncomingMessage, letter: DeadLetter) -> None:
            if max_replays is not None and letter.replays >= max_replays:
                report.matched.remove(letter)
                report.held.append(letter)  # not acked: it returns to the dead-letter queue
                return
            if dry_run:
                return
            pending.append((message, letter))
            if len(pending) >= batch:
                await flush()
            # Rate limit: the n-th message may not leave before n / rate seconds.
            wait = started + len(report.matched) * interval - time.monotonic()
            if wait > 0:
                if pending:
                    await flush()
                await asyncio.sleep(wait)

        try:
            await self._scan(queue, total, reason, limit, visit, report)
            if pending:
                await flush()
        finally:
            await connection.close()
        return report

    async def _publish_copy(self, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        headers = {k: v for k, v in (message.headers or {}).items() if k not in CLEARED_ON_REPLAY}
        headers.update(copy_marks(message.message_id))
        count = headers.get(REPLAY_COUNT_HEADER)
        headers[REPLAY_COUNT_HEADER] = (count if isinstance(count, int) else 0) + 1
        copy = aio_pika.Message(body=message.body, headers=headers, content_type=message.content_type,
                                content_encoding=message.content_encoding, message_id=message.message_id,
                                correlation_id=message.correlation_id, timestamp=message.timestamp, type=message.type,
                                app_id=message.app_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(copy, self.target, mandatory=True, timeout=30)

    async def purge(self, *, reason: Reasons = None,
                    on_removed: Callable[[DeadLetter], None] | None = None) -> Report:
        connection, _, queue, total = await self._open()
        report = Report()

        async def visit(message: AbstractIncomingMessage, letter: DeadLetter) -> None:
            await message.ack()
            report.moved += 1
            if self.records is not None:
                await self.records.moved(letter.record_id, DeliveryStatus.PURGED)
            if on_removed is not None:
                on_removed(letter)

        try:
            await self._scan(queue, total, reason, None, visit, report)
        finally:
            await connection.close()
        return report


def as_json(letter: DeadLetter) -> str:
    return json.dumps(asdict(letter), ensure_ascii=False)
