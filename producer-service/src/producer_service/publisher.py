"""The producer's link to RabbitMQ: one connection, one confirming channel, reconnected by itself.

A publish succeeds only when the broker confirmed it. Mandatory publishing makes an event that no queue
would take come back as an error (never dropped silently); the caller answers 503 and the client retries.

A link that dies without a reset (a blackholed network, a vanished node behind a load balancer) looks open to the
socket. Two things notice it: the AMQP heartbeat (`heartbeat` s, asked of the broker; aiormq closes a connection
after about 3 x (heartbeat + 1) s of silence) and, sooner under load, a confirm that does not come within the
publish timeout. Either makes the publisher not ready and open a new connection, so /readyz says 503 while the link
is dead and the producer serves again once a new connection gets through, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from datetime import datetime

import aio_pika
import aiormq.abc
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError
from aiormq import spec

from .envvars import broker_failure
from .events import EVENT_TYPE, UserSignedUp
from .metrics import ProducerMetrics

log = logging.getLogger("producer_service.publisher")

EXCHANGE = "signups"
ROUTING_KEY = EVENT_TYPE
CORRELATION_ID_HEADER = "x-correlation-id"  # the request id; the email service reads it under the same name
# The id the same Idempotency-Key had before IDEMPOTENCY_SECRET (events.legacy_event_id_for): the email service's
# dedup honours it, so a client's retry across the upgrade gives one mail.
LEGACY_EVENT_ID_HEADER = "x-legacy-event-id"


class PublishFailure(enum.StrEnum):
    """Why the broker did not take an event. The value is the `reason` of the log line and of the 503 body."""

    BROKER_UNAVAILABLE = "broker_unavailable"  # no open connection and confirming channel, or it broke meanwhile
    UNROUTABLE = "unroutable"  # returned: no queue is bound for user.signed_up (mandatory publish)
    NACKED = "nacked"  # the broker refused to store it
    CONFIRM_TIMEOUT = "confirm_timeout"  # no confirm within PUBLISH_TIMEOUT_SECONDS


class PublishFailed(Exception):
    """The broker did not confirm the event: unavailable, returned, nacked or too slow. Nothing was accepted."""

    def __init__(self, reason: PublishFailure) -> None:
        super().__init__(reason.value)
        self.reason = reason


class EventPublisher:
    def __init__(self, url: str, metrics: ProducerMetrics, *, publish_timeout: float = 5.0,
                 reconnect_max_delay: float = 5.0, heartbeat: int = 5, app_id: str = "producer-service") -> None:
        self._url = url
        self._metrics = metrics
        self._publish_timeout = publish_timeout
        self._reconnect_max_delay = reconnect_max_delay
        self._heartbeat = heartbeat
        self._app_id = app_id
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._underlay: aiormq.abc.AbstractChannel | None = None  # aiormq's channel under self._channel
        self._task: asyncio.Task | None = None
        self._lost = asyncio.Event()
        self._stopping = False
        self._renewed_at = 0.0
        self.connects = 0  # how many times a connection was (re)established

    @property
    def ready(self) -> bool:
        return (
            self._exchange is not None
            and self._channel is not None and not self._channel.is_closed
            and self._connection is not None and not self._connection.is_closed
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_connected(), name="broker-link")

    async def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.ready

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def _keep_connected(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                await self._connect()
            except Exception as exc:  # noqa: BLE001 - whatever failed, keep trying: this loop must never die
                log.warning("broker connection failed, retrying", extra={
                    "retry_in_seconds": delay, "error": broker_failure(exc, self._url)})
                await self._close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._reconnect_max_delay)
                continue
            delay = 0.2
            self.connects += 1
            self._metrics.broker_connected.set(1)
            log.info("connected to broker, exchange %r declared", EXCHANGE)
            await self._lost.wait()
            self._metrics.broker_connected.set(0)
            log.warning("broker connection lost, reconnecting")
            await self._close()

    async def _connect(self) -> None:
        self._lost.clear()
        connection = await aio_pika.connect(self._url, timeout=10, heartbeat=self._heartbeat,
                                            client_properties={"connection_name": self._app_id})
        self._connection = connection
        connection.close_callbacks.add(self._on_close)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        channel.close_callbacks.add(self._on_close)
        self._channel = channel
        exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        self._underlay = await channel.get_underlay_channel()
        self._exchange = exchange

    def _on_close(self, *_: object) -> None:
        self._exchange = None
        self._lost.set()

    async def _close(self) -> None:
        self._exchange = None
        connection, self._connection, self._channel, self._underlay = self._connection, None, None, None
        self._metrics.broker_connected.set(0)
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=2)

    def _renew(self, exchange: AbstractExchange, why: PublishFailure) -> None:
        """A nack or a confirm timeout: open a new connection and channel instead of publishing on into this one.

        RabbitMQ 3.10 nacks every later publish of a channel that first published to a quorum queue while the
        queue's leader node was just gone (the channel keeps the dead leader): without a new channel the producer
        would answer 503 until it is restarted. A confirm that never comes is the sign of a dead link that the
        heartbeat has not caught yet. At most once a second, so a queue that really refuses messages (or a broker
        that is merely slow) does not make the producer reconnect on every request.
        """
        now = time.monotonic()
        if exchange is not self._exchange or now - self._renewed_at < 1.0:
            return
        self._renewed_at = now
        log.warning("broker publish failed, opening a new connection", extra={"reason": why.value})
        self._exchange = None  # not ready until the new channel is open
        self._lost.set()

    async def publish(self, event: UserSignedUp, correlation_id: str) -> None:
        exchange, underlay = self._exchange, self._underlay
        if exchange is None or underlay is None or not self.ready:
            raise PublishFailed(PublishFailure.BROKER_UNAVAILABLE)
        # The properties as pamqp takes them, handed to aiormq's channel: what exchange.publish(aio_pika.Message(...))
        # does, without building the Message and converting it (about 10 us of a signup's CPU). The channel was
        # opened by aio-pika with publisher confirms and on_return_raises, so the outcomes below are the same.
        properties = spec.Basic.Properties(
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,  # persistent
            message_id=event.event_id,
            correlation_id=correlation_id,
            message_type=EVENT_TYPE,
            app_id=self._app_id,
            timestamp=datetime.fromtimestamp(int(event.occurred_at.timestamp()), tz=event.occurred_at.tzinfo),
            headers={CORRELATION_ID_HEADER: correlation_id} if event.legacy_event_id is None
            else {CORRELATION_ID_HEADER: correlation_id, LEGACY_EVENT_ID_HEADER: event.legacy_event_id},
        )
        started = time.perf_counter()
        try:
            await underlay.basic_publish(event.to_json(), exchange=EXCHANGE, routing_key=ROUTING_KEY,
                                         properties=properties, mandatory=True, timeout=self._publish_timeout)
        except PublishError:
            raise PublishFailed(PublishFailure.UNROUTABLE) from None
        except DeliveryError:
            self._renew(exchange, PublishFailure.NACKED)
            raise PublishFailed(PublishFailure.NACKED) from None
        except asyncio.TimeoutError:
            self._renew(exchange, PublishFailure.CONFIRM_TIMEOUT)
            raise PublishFailed(PublishFailure.CONFIRM_TIMEOUT) from None
        except (AMQPError, OSError, RuntimeError) as exc:
            raise PublishFailed(PublishFailure.BROKER_UNAVAILABLE) from exc
        except asyncio.CancelledError:
            # aiormq cancels the confirms still pending when their connection is closed (a dead link being
            # replaced): that is the broker being unavailable, not this request being cancelled (that one re-raises)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise PublishFailed(PublishFailure.BROKER_UNAVAILABLE) from None
        self._metrics.publish_seconds.observe(time.perf_counter() - started)
