"""Consumer ceiling: the least code that does the email-service's job. A bare aio-pika consumer (uvloop,
prefetch BENCH_PREFETCH, default 32) on the work queue that sends one pre-rendered mail (bytes prepared once at
start) through a pool of BENCH_POOL (default 16) reused aiosmtplib connections, then acks. No parsing, no
validation, no rendering, no metrics, no logging, no retries. The only per-message work: a Message-ID header
line from the AMQP message_id (so the end-to-end benchmark can time each mail, as it does for the email-service).

Env: BENCH_AMQP_URL, BENCH_SMTP_PORT, BENCH_QUEUE (default email.welcome).
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import datetime, timezone

import aio_pika
import aiosmtplib
import uvloop

from email_service.events import UserSignedUp
from email_service.templates import WelcomeEmail

URL = os.environ["BENCH_AMQP_URL"]
PORT = int(os.environ["BENCH_SMTP_PORT"])
QUEUE = os.environ.get("BENCH_QUEUE", "email.welcome")
PREFETCH = int(os.environ.get("BENCH_PREFETCH", "32"))
POOL = int(os.environ.get("BENCH_POOL", "16"))


async def main() -> None:
    mail = WelcomeEmail("Welcome <no-reply@example.com>", "Acme").render(UserSignedUp(
        event_id="00000000-0000-4000-8000-000000000000", occurred_at=datetime.now(timezone.utc),
        email="ada@example.com", name="Ada Lovelace", locale="en"))
    # The rendered mail without its Message-ID line; each message gets its own from the AMQP message_id.
    rest = b"".join(line for line in mail.data.splitlines(keepends=True) if not line.startswith(b"Message-ID:"))
    pool: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
    for _ in range(POOL):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=PORT, use_tls=False, start_tls=False)
        await client.connect()
        pool.put_nowait(client)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        client = await pool.get()
        try:
            data = b"Message-ID: <%s@example.com>\r\n" % (message.message_id or "none").encode() + rest
            await client.sendmail(mail.sender, [mail.recipient], data)
        finally:
            pool.put_nowait(client)
        await message.ack()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    connection = await aio_pika.connect(URL)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.get_queue(QUEUE)
    await queue.consume(on_message)
    await stop.wait()
    await connection.close()


if __name__ == "__main__":
    uvloop.run(main())
