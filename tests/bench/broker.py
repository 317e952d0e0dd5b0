"""The benchmark's side of RabbitMQ: a py-amqp channel for fast bulk work (vhosts: tests/support/broker.py).

py-amqp (synchronous, no confirms) publishes tens of thousands of prepared messages a second from the driver,
and answers queue depths exactly (a passive declare), unlike the management statistics. Waits are bounded
(tests/support/waits.py) and raise WaitTimedOut naming the queue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import amqp

from tests.support.waits import eventually_sync

from .paths import BROKER_HOST

Prepared = tuple[bytes, dict]  # a message body and its AMQP properties


def vhost_url(vhost: str) -> str:
    return f"amqp://guest:guest@{BROKER_HOST}/{vhost}"


class Broker:
    """One connection and channel to one vhost."""

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self.url = vhost_url(vhost)
        self.conn = amqp.Connection(host=BROKER_HOST, userid="guest", password="guest", virtual_host=vhost)
        self.conn.connect()
        self.ch = self.conn.channel()

    def depth(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers) of the queue, right now."""
        _, messages, consumers = self.ch.queue_declare(queue, passive=True)
        return messages, consumers

    def purge(self, *queues: str) -> None:
        for queue in queues:
            self.ch.queue_purge(queue)

    def publish(self, exchange: str, routing_key: str, messages: Iterable[Prepared]) -> int:
        n = 0
        for body, props in messages:
            self.ch.basic_publish(amqp.Message(body, **props), exchange=exchange, routing_key=routing_key)
            n += 1
        return n

    def wait_depth(self, queue: str, at_least: int, timeout: float = 120.0) -> None:
        eventually_sync(lambda: self.depth(queue)[0] >= at_least, timeout, 0.05,
                        what=f"{at_least} messages in {queue}")

    def wait_empty(self, queue: str, timeout: float = 60.0) -> None:
        eventually_sync(lambda: self.depth(queue)[0] == 0, timeout, 0.2, what=f"{queue} drained")

    def wait_consumers(self, queue: str, count: int, timeout: float = 60.0) -> None:
        eventually_sync(lambda: self.depth(queue)[1] >= count, timeout, 0.02,
                        what=f"{count} consumers on {queue}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
