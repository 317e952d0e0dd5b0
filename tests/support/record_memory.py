"""How much Redis memory the delivery records take: `python -m tests.support.record_memory [N]`.

Starts a private redis-server (tests.support.redis_server.PrivateRedis: loopback, nothing on disk), writes N
records the way the email service does (claim, then `sent` with a realistic provider reply and Message-ID, through
email_service.status.DeliveryRecords), and reads INFO memory before and after. Prints bytes per record and the
figure for a million; the README quotes it."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from email_service.status import Accepted, DeliveryRecords

from .redis_server import PrivateRedis

BATCH = 50  # records written at once (fewer than the client pool's connections)


async def used_memory(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        server = await PrivateRedis(Path(workdir)).start()
        try:
            client = aioredis.Redis.from_url(server.url)
            records = DeliveryRecords(client, ttl_seconds=30 * 24 * 3600, claim_seconds=130, dedup=True,
                                      fail_open=False, prefix="welcome-mail:")
            before = await used_memory(client)

            async def one() -> None:
                event_id = str(uuid.uuid4())
                await records.claim(event_id, attempt=1, locale="zh-CN")
                await records.sent(event_id, Accepted(f"2.0.0 Ok: queued as {uuid.uuid4().hex[:12].upper()}",
                                                      f"<{event_id}@acme.test>"))

            for start in range(0, count, BATCH):
                await asyncio.gather(*(one() for _ in range(min(BATCH, count - start))))
            after = await used_memory(client)
            keys = await client.dbsize()
            await client.aclose()
        finally:
            server.stop()
    per_record = (after - before) / count
    return {"records": count, "keys": keys, "bytes_before": before, "bytes_after": after,
            "bytes_per_record": per_record, "mib_per_million": per_record * 1_000_000 / 2**20}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    result = asyncio.run(measure(count))
    print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
