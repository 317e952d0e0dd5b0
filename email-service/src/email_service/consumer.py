"""The consumer's lifecycle: connect, declare the topology, consume with N messages in flight, reconnect by itself,
and on stop: cancel the subscription, let in-flight messages finish (bounded), then close.

N (the prefetch) is CONCURRENCY while the SMTP provider accepts, and follows the send governor's lower limit while
it throttles, so throttled mail waits in RabbitMQ, not in this process. RabbitMQ applies a new prefetch to new
subscriptions only (quorum queues grant their credit when the consumer registers), so a change re-subscribes on the
same channel: deliveries already under way are handled and acked as usual.

Whatever did not finish stays unacked and RabbitMQ hands it to another consumer when the channel closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue, ConsumerTag

from .config import Settings
from .envvars import broker_failure
from .handler import MessageHandler
from .metrics import EmailMetrics
from .retry import RetryPolicy
from .throttle import SendGovernor
from .topology import declare

log = logging.getLogger("email_service.consumer")

FOLLOW_SECONDS = 1.0  # how often the prefetch is compared with the send governor's limit


def prefetch_for(concurrency: int, governor: SendGovernor | None) -> int:
    """CONCURRENCY while the provider accepts all the governor allows; its limit while it is lowered."""
    if governor is None or governor.limit >= governor.ceiling:
        return concurrency
    return min(concurrency, governor.limit)


# the channel that delivered the message being handled (each handling task has its own copy)
_delivered_on: contextvars.ContextVar[AbstractChannel | None] = contextvars.ContextVar("delivered_on", default=None)


class EmailConsumer:
    def __init__(self, settings: Settings, handler: MessageHandler, policy: RetryPolicy, metrics: EmailMetrics,
                 governor: SendGovernor | None = None) -> None:
        self.settings = settings
        self.governor = governor
        self.prefetch = settings.concurrency
        self.handler = handler
        self.policy = policy
        self.metrics = metrics
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: ConsumerTag | None = None
        self._lost = asyncio.Event()
        self._in_flight: set[asyncio.Task] = set()
        self._on_message: Callable[[AbstractIncomingMessage], Awaitable[None]] | None = None
        self.connects = 0  # how many times the consumer was (re)registered
        handler.on_channel_broken = self._channel_broken
        metrics.consumer_up.set_function(lambda: 1 if self.ready else 0)

    @property
    def ready(self) -> bool:
        return (self._consumer_tag is not None and self._channel is not None and not self._channel.is_closed
                and self._connection is not None and not self._connection.is_closed)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until stop is set, reconnecting whenever the broker connection is lost."""
        delay = 0.2
        while not stop.is_set():
            try:
                await self._start_consuming()
            except Exception as exc:  # noqa: BLE001 - whatever failed (also a queue declared with other arguments), retry
                log.warning("cannot consume, retrying", extra={
                    "retry_in_seconds": delay, "error": broker_failure(exc, self.settings.amqp_url.value)})
                await self._close_connection()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, self.settings.reconnect_max_delay)
                continue
            delay = 0.2
            log.info("consuming", extra={"queue": self.policy.queue, "prefetch": self.prefetch})
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._lost.wait())]
            while not (stop.is_set() or self._lost.is_set()):
                await asyncio.wait(waiters, timeout=FOLLOW_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                await self._follow_governor()
            for waiter in waiters:
                waiter.cancel()
            if stop.is_set():
                break
            log.warning("broker connection or channel lost, reconnecting")
            self._mark_down()
            await self._close_connection()
        await self._drain_and_close()

    async def _start_consuming(self) -> None:
        self._lost.clear()
        # The heartbeat is what notices a link that died without a reset (a blackholed network): aiormq closes the
        # connection after about 3 x (heartbeat + 1) s of silence, RabbitMQ after 2 x heartbeat and redelivers.
        connection = await aio_pika.connect(self.settings.amqp_url.value, timeout=10,
                                            heartbeat=self.settings.amqp_heartbeat,
                                            client_properties={"connection_name": "email-service"})
        self._connection = connection
        connection.close_callbacks.add(self._on_close)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        channel.close_callbacks.add(self._on_close)
        self._channel = channel
        self.prefetch = prefetch_for(self.settings.concurrency, self.governor)
        self.metrics.consumer_prefetch.set(self.prefetch)
        await channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await declare(channel, self.policy)
        exchange = channel.default_exchange

        async def on_message(message: AbstractIncomingMessage) -> None:
            # aiormq runs this callback in a task of the channel and cancels it when the connection is lost. The
            # mail must not be abandoned half-sent (the SMTP server may already have queued it, and the dedup claim
            # would be released unrecorded: a second mail on redelivery), so the handling runs in a task of its own
            # that the channel cannot cancel. Its ack then fails and the message is redelivered: with dedup on, the
            # redelivered copy is skipped as a duplicate.
            _delivered_on.set(channel)
            task = asyncio.ensure_future(self.handler(message, exchange))  # runs in a copy of this context
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            await asyncio.shield(task)

        self._on_message = on_message
        self._consumer_tag = await self._queue.consume(on_message)
        self.connects += 1

    async def _follow_governor(self) -> None:
        """Re-subscribe with the prefetch the governor's limit calls for, when it differs from the current one."""
        target = prefetch_for(self.settings.concurrency, self.governor)
        channel, queue, tag = self._channel, self._queue, self._consumer_tag
        if (target == self.prefetch or not self.ready or channel is None or queue is None or tag is None
                or self._on_message is None):
            return
        try:
            await channel.set_qos(prefetch_count=target)
            await queue.cancel(tag)  # what RabbitMQ sent before its cancel-ok still arrives and is handled
            self._consumer_tag = await queue.consume(self._on_message)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the channel is suspect: start over
            log.warning("cannot re-subscribe with a new prefetch, reconnecting", extra={"error": repr(exc)[:300]})
            self._lost.set()
            return
        log.info("prefetch follows the SMTP concurrency limit", extra={"prefetch": target, "was": self.prefetch})
        self.prefetch = target
        self.metrics.consumer_prefetch.set(target)

    def _channel_broken(self) -> None:
        """The handler could neither ack nor move a message: recycle the channel it came on, if that is still the
        current one (a handler finishing after a reconnect must not tear down the new channel)."""
        if _delivered_on.get() is self._channel:
            self._lost.set()

    def _on_close(self, *_: object) -> None:
        self._mark_down()
        self._lost.set()

    def _mark_down(self) -> None:
        self._consumer_tag = None

    async def _close_connection(self) -> None:
        connection, self._connection, self._channel, self._queue = self._connection, None, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=5)

    async def _drain_and_close(self) -> None:
        """Stop taking messages, give in-flight ones up to the shutdown timeout, then close."""
        queue, tag = self._queue, self._consumer_tag
        self._mark_down()
        if queue is not None and tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(queue.cancel(tag), timeout=5)
        pending = set(self._in_flight)
        if pending:
            started = time.monotonic()
            log.info("waiting for in-flight messages", extra={"in_flight": len(pending)})
            done, still = await asyncio.wait(pending, timeout=self.settings.shutdown_timeout)
            log.info("in-flight messages handled", extra={
                "finished": len(done), "left_unacked": len(still), "seconds": round(time.monotonic() - started, 3)})
            for task in still:
                task.cancel()
        await self._close_connection()
