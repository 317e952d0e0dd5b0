"""The RabbitMQ objects this service needs, declared idempotently at start-up (any number of copies may do it).

    producer --(signups, topic, user.signed_up)--> email.welcome (quorum) --> email-service
        ^                                              |  transient failure: publish to a delay tier
        |                                              v
        +--- TTL expires, dead-lettered back ---- email.welcome.retry.<delay> (quorum, x-message-ttl)
        +--- TTL expires, dead-lettered back ---- email.welcome.deferred.<delay> (throttled: the same, one tier)
    permanent failure / retries exhausted / delivery limit --> email.welcome.dlq (quorum)

All queues are quorum queues (replicated on a cluster) and dead-letter at-least-once, so a message moving
from a delay tier back to the work queue (or to the DLQ) is not lost if a node fails at that moment.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from .retry import RetryPolicy

EXCHANGE = "signups"
ROUTING_KEY = "user.signed_up"
WORK_QUEUE = "email.welcome"
DEAD_LETTER_QUEUE = "email.welcome.dlq"
# A message redelivered this many times without an ack or reject (for example because it kills the process each
# time) is dead-lettered by RabbitMQ itself instead of looping forever.
DELIVERY_LIMIT = 20

_AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def work_queue_arguments() -> dict:
    return {"x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
            "x-delivery-limit": DELIVERY_LIMIT, **_AT_LEAST_ONCE}


def tier_arguments(delay_seconds: float, queue: str = WORK_QUEUE) -> dict:
    return {"x-queue-type": "quorum", "x-message-ttl": int(delay_seconds * 1000), "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue, **_AT_LEAST_ONCE}


async def declare(channel: AbstractChannel, policy: RetryPolicy) -> AbstractQueue:
    """Declare exchange, work queue, delay tiers and DLQ; return the work queue."""
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    for name, delay in [*policy.tier_queues, (policy.defer_queue, policy.defer_delay)]:
        await channel.declare_queue(name, durable=True, arguments=tier_arguments(delay, policy.queue))
    queue = await channel.declare_queue(policy.queue, durable=True, arguments=work_queue_arguments())
    await queue.bind(exchange, ROUTING_KEY)
    return queue
