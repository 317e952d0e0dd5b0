"""Clustered RabbitMQ: a quorum queue keeps every confirmed message when its leader node is SIGKILLed.

Everything goes through the haproxy front, as the services would: publish 1,000 persistent messages with
publisher confirms, SIGKILL the node leading the queue, consume all 1,000 again (reconnecting through the
front as often as needed, every wait bounded), then restart the node and see it rejoin the cluster and the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aio_pika
import aiormq
import pytest

if TYPE_CHECKING:
    from tests.cluster.rabbit_cluster import RabbitCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MESSAGES = 1_000
PUBLISH_BATCH = 100           # confirms awaited together, a batch at a time
PREFETCH = 100
STEP_TIMEOUT_SECONDS = 10     # any one AMQP step (connect, declare, next message, confirm batch)
DRAIN_TIMEOUT_SECONDS = 90    # all messages back after the kill
REJOIN_TIMEOUT_SECONDS = 60   # the restarted node back among the queue's online members

# what a dying node or a queue without a leader looks like from the client
BROKER_TROUBLE = (asyncio.TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, OSError, RuntimeError)


def quorum_queue_arguments() -> dict[str, str]:
    return {"x-queue-type": "quorum"}


async def publish_confirmed(url: str, queue: str, count: int) -> None:
    connection = await asyncio.wait_for(aio_pika.connect(url), STEP_TIMEOUT_SECONDS)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments=quorum_queue_arguments())
        for start in range(0, count, PUBLISH_BATCH):
            batch = range(start, min(start + PUBLISH_BATCH, count))
            await asyncio.wait_for(asyncio.gather(*(
                channel.default_exchange.publish(
                    aio_pika.Message(str(n).encode(), message_id=str(n),
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue)
                for n in batch)), STEP_TIMEOUT_SECONDS)
    finally:
        await connection.close()


@dataclass
class Drain:
    """What consuming the queue back took."""

    expected: int
    received: set[int] = field(default_factory=set)
    deliveries: int = 0
    connections: int = 0
    reconnections: int = 0
    errors: list[str] = field(default_factory=list)
    first_delivery_at: float | None = None
    first_delivery_after_reconnect_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def open_consumer_channel(url: str, queue: str) -> tuple[aio_pika.abc.AbstractConnection,
                                                               aio_pika.abc.AbstractQueue]:
    connection = await asyncio.wait_for(aio_pika.connect(url), STEP_TIMEOUT_SECONDS)
    try:
        channel = await asyncio.wait_for(connection.channel(), STEP_TIMEOUT_SECONDS)
        await asyncio.wait_for(channel.set_qos(prefetch_count=PREFETCH), STEP_TIMEOUT_SECONDS)
        declared = await asyncio.wait_for(channel.declare_queue(queue, passive=True), STEP_TIMEOUT_SECONDS)
    except BaseException:
        await close_quietly(connection)
        raise
    return connection, declared


async def close_quietly(connection: aio_pika.abc.AbstractConnection | None) -> None:
    if connection is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 5)


async def consumer(url: str, queue: str, result: Drain,
                   connected: tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractQueue]) -> None:
    """One consumer (think: one email-service pod): manual acks; on trouble it reconnects through the front."""
    reconnected = False
    while not result.done.is_set():
        connection = None
        try:
            if connected is not None:
                (connection, declared), connected = connected, None
            else:
                connection, declared = await open_consumer_channel(url, queue)
                result.reconnections += 1
                reconnected = True
            result.connections += 1
            messages = declared.iterator()
            while not result.done.is_set():
                message = await asyncio.wait_for(messages.__anext__(), STEP_TIMEOUT_SECONDS)
                await asyncio.wait_for(message.ack(), STEP_TIMEOUT_SECONDS)
                now = time.monotonic()
                result.first_delivery_at = result.first_delivery_at or now
                if reconnected:
                    result.first_delivery_after_reconnect_at = result.first_delivery_after_reconnect_at or now
                result.deliveries += 1
                result.received.add(int(message.body))
                if len(result.received) >= result.expected:
                    result.done.set()
        except BROKER_TROUBLE as error:
            result.errors.append(f"{type(error).__name__}: {error}")
            await asyncio.sleep(0.2)
        finally:
            await close_quietly(connection)


async def drain(url: str, queue: str, expected: int, timeout: float,
                connected: list[tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractQueue]]) -> Drain:
    """Consume with one consumer per already open connection until every message 0..expected-1 was seen."""
    result = Drain(expected)
    tasks = [asyncio.create_task(consumer(url, queue, result, pair)) for pair in connected]
    try:
        await asyncio.wait_for(result.done.wait(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"after {timeout}s only {len(result.received)} of {expected} messages came back "
                    f"({result.connections} connections; last errors: {result.errors[-5:]})")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return result


async def take_leftovers(url: str, queue: str) -> list[int]:
    """Every message still in the queue (taken without ack), then the queue deleted."""
    connection, declared = await open_consumer_channel(url, queue)
    try:
        left: list[int] = []
        while (message := await asyncio.wait_for(declared.get(no_ack=True, fail=False),
                                                 STEP_TIMEOUT_SECONDS)) is not None:
            left.append(int(message.body))
        await declared.delete(if_unused=False, if_empty=False)
        return left
    finally:
        await close_quietly(connection)


async def in_thread(function, *args):
    """Cluster calls block for seconds (rabbitmqctl): keep the event loop (and the AMQP heartbeats) running."""
    return await asyncio.to_thread(function, *args)


async def test_quorum_queue_keeps_every_confirmed_message_when_its_leader_is_killed(
        rabbit_cluster: RabbitCluster, request: pytest.FixtureRequest) -> None:
    cluster = rabbit_cluster
    queue = f"wm-cluster-{uuid.uuid4().hex[:10]}"

    started = time.monotonic()
    await publish_confirmed(cluster.url, queue, MESSAGES)
    publish_seconds = time.monotonic() - started

    assert sorted(await in_thread(cluster.members, queue)) == sorted(cluster.nodes), \
        "the quorum queue should have a member on every node"
    leader = await in_thread(cluster.leader, queue)
    assert leader in cluster.nodes

    # three consumers connected through the front before the kill: roundrobin puts one on each node,
    # so one of them is on the doomed leader and has to reconnect (through the front) to get its share
    connected = [await open_consumer_channel(cluster.url, queue) for _ in cluster.nodes]
    await in_thread(cluster.kill, leader)
    killed_at = time.monotonic()

    drained = await drain(cluster.url, queue, MESSAGES, DRAIN_TIMEOUT_SECONDS, connected)
    drain_seconds = time.monotonic() - killed_at
    assert drained.received == set(range(MESSAGES))
    assert drained.first_delivery_at is not None
    failover_seconds = drained.first_delivery_at - killed_at
    assert drained.reconnections >= 1, "the consumer on the killed node should have reconnected through the front"
    reconnect_seconds = ((drained.first_delivery_after_reconnect_at or float("nan")) - killed_at)

    new_leader = await in_thread(cluster.leader, queue)
    assert new_leader != leader and new_leader in cluster.nodes
    assert leader not in await in_thread(cluster.running_nodes)

    started = time.monotonic()
    await in_thread(cluster.start, leader)
    restart_seconds = time.monotonic() - started
    running = sorted(await in_thread(cluster.running_nodes))
    assert running == sorted(cluster.nodes), f"running after {leader}'s restart: {running}\n" + \
        await in_thread(cluster.views)
    deadline = time.monotonic() + REJOIN_TIMEOUT_SECONDS
    while leader not in await in_thread(cluster.members, queue):
        if time.monotonic() > deadline:
            pytest.fail(f"{leader} did not come back as an online member of {queue} "
                        f"within {REJOIN_TIMEOUT_SECONDS}s")
        await asyncio.sleep(0.5)
    rejoin_seconds = time.monotonic() - started

    # What is left in the queue can only be redeliveries: an ack in flight to the killed leader is lost with
    # it, so the new leader hands that message out again (at-least-once). Read them back, then remove the
    # queue (the cluster may be reused: `make cluster-up`).
    leftovers = await take_leftovers(cluster.url, queue)
    assert set(leftovers) <= drained.received, f"messages never seen before are still queued: {leftovers}"

    timings = {
        "cluster_up_seconds": cluster.timings.get("up_seconds", 0.0),
        "publish_1000_confirmed_seconds": publish_seconds,
        "failover_seconds": failover_seconds,
        "reconnected_consumer_first_delivery_seconds": reconnect_seconds,
        "drain_after_kill_seconds": drain_seconds,
        "restart_until_rejoined_seconds": restart_seconds,
        "restart_until_queue_member_online_seconds": rejoin_seconds,
        "redelivered_after_the_drain": len(leftovers),
    }
    request.node.user_properties.extend((name, round(value, 3)) for name, value in timings.items())
    print(f"\nkilled leader {leader}, new leader {new_leader}; "
          f"{drained.deliveries} deliveries ({drained.deliveries - MESSAGES} redelivered during the drain, "
          f"{len(leftovers)} after it) over "
          f"{drained.connections} connection(s), {drained.reconnections} reconnection(s); "
          f"errors on the way: {drained.errors}")
    print("timings: " + ", ".join(f"{name}={value:.2f}" for name, value in timings.items()))
