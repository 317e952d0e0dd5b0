"""Small AMQP helpers for tests: publish raw messages, read a queue without consuming it for good."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import aio_pika

from email_service.wire import dead_letter_reason


def event_body(email: str = "ada@example.com", name: str = "Ada Lovelace", locale: str = "en",
               event_id: str | None = None) -> bytes:
    return json.dumps({
        "schema_version": 1, "event_type": "user.signed_up", "event_id": event_id or str(uuid.uuid4()),
        "occurred_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "user": {"email": email, "name": name, "locale": locale},
    }, ensure_ascii=False).encode()


async def publish_raw(url: str, bodies: list[bytes], *, routing_key: str = "user.signed_up", exchange: str = "signups",
                      **properties) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange) if exchange else channel.default_exchange
        for body in bodies:
            await target.publish(aio_pika.Message(body=body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                                  **properties), routing_key)
    finally:
        await connection.close()


async def read_queue(url: str, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message now in the queue; they are acked (removed)."""
    connection = await aio_pika.connect(url)
    messages = []
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
            messages.append(message)
    finally:
        await connection.close()
    return messages


async def declare_topology(url: str, delays: tuple[float, ...] = (0.2, 0.4)) -> None:
    """Declare what email-service declares, so messages can be queued before any consumer runs."""
    from email_service.retry import RetryPolicy
    from email_service.topology import declare

    connection = await aio_pika.connect(url)
    try:
        await declare(await connection.channel(), RetryPolicy(max_attempts=3, delays=delays))
    finally:
        await connection.close()


async def ready_count(url: str, queue_name: str) -> int:
    """Messages ready in the queue right now (passive declare: exact, unlike the periodic management stats)."""
    connection = await aio_pika.connect(url)
    try:
        queue = await (await connection.channel()).declare_queue(queue_name, passive=True)
        return queue.declaration_result.message_count
    finally:
        await connection.close()


async def read_dead_letters(url: str, queue_name: str = "email.welcome.dlq") -> list[DeadLetter]:
    """Every dead letter now in the queue, with its reason; they are acked (removed)."""
    return [DeadLetter.of(message) for message in await read_queue(url, queue_name)]


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    headers: dict[str, object]
    reason: str  # the email-service's reason, else RabbitMQ's own (delivery_limit, expired, ...), else "unknown"

    @classmethod
    def of(cls, message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
        headers = dict(message.headers or {})
        return cls(message.message_id, headers, dead_letter_reason(headers))
