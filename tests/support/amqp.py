"""Small AMQP helpers for tests: publish raw messages, read a queue without consuming it for good."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import aio_pika
import pamqp.body
import pamqp.exceptions
import pamqp.frame
import pamqp.header
from pamqp import commands

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


async def publish_bare(url: str, body: bytes, *, routing_key: str = "user.signed_up",
                       exchange: str = "signups") -> None:
    """Publish one persistent message with no properties but delivery_mode, confirmed: what another client (or a
    hand in the management UI) can send. aio-pika cannot: aiormq gives every publish without a message_id a random
    one (it matches returns to confirms by it), so this speaks AMQP 0-9-1 itself with pamqp's frames."""
    parts = urllib.parse.urlsplit(url)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    reader, writer = await asyncio.open_connection(parts.hostname or "localhost", parts.port or 5672)
    buffer = b""

    async def receive(expected: type) -> object:
        nonlocal buffer
        while True:
            try:
                consumed, _, value = pamqp.frame.unmarshal(buffer)
            except pamqp.exceptions.UnmarshalingException:
                chunk = await asyncio.wait_for(reader.read(65536), timeout=10)
                if not chunk:
                    raise ConnectionError("the broker closed the connection") from None
                buffer += chunk
                continue
            buffer = buffer[consumed:]
            if isinstance(value, commands.Connection.Close | commands.Channel.Close):
                raise ConnectionError(f"the broker closed: {value.reply_code} {value.reply_text}")
            if isinstance(value, expected):
                return value

    def send(value: object, channel: int = 0) -> None:
        writer.write(pamqp.frame.marshal(value, channel))

    try:
        writer.write(pamqp.header.ProtocolHeader().marshal())
        await receive(commands.Connection.Start)
        user, password = (urllib.parse.unquote(part or "guest") for part in (parts.username, parts.password))
        credentials = f"\0{user}\0{password}"
        send(commands.Connection.StartOk(client_properties={}, mechanism="PLAIN", response=credentials))
        tune = await receive(commands.Connection.Tune)
        send(commands.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0))
        send(commands.Connection.Open(virtual_host=vhost))
        await receive(commands.Connection.OpenOk)
        send(commands.Channel.Open(), 1)
        await receive(commands.Channel.OpenOk)
        send(commands.Confirm.Select(), 1)
        await receive(commands.Confirm.SelectOk)
        send(commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True), 1)
        send(pamqp.header.ContentHeader(0, len(body), commands.Basic.Properties(delivery_mode=2)), 1)
        send(pamqp.body.ContentBody(body), 1)
        confirm = await receive(commands.Basic.Ack | commands.Basic.Nack | commands.Basic.Return)
        if not isinstance(confirm, commands.Basic.Ack):
            raise AssertionError(f"the broker did not take the message: {confirm!r}")
        send(commands.Connection.Close(reply_code=200, reply_text="done", class_id=0, method_id=0), 0)
        await receive(commands.Connection.CloseOk)
    finally:
        writer.close()
