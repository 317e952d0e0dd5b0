"""Duplicate-free delivery: remember delivered event ids in Redis, so a redelivered or replayed event is acked
without a second mail.

Per event: claim it (SET inflight NX EX), check it was not delivered already, send, record it as delivered
(SET delivered NX EX ttl) and drop the claim. The claim makes two consumers that got the same event at the same
moment (a client's retried POST with the same Idempotency-Key) send one mail: the second one sees the claim and
retries later, by when the first has recorded the delivery. Order matters: a claim is only won after the previous
holder released it, which it does after recording the delivery, so a winner always sees that record.

What remains: a crash between the SMTP server's acceptance and the record (one Redis round trip, well under a
millisecond on a local network) sends the mail again on redelivery.
"""

from __future__ import annotations

import enum
import logging

import redis.asyncio as redis
from redis.exceptions import RedisError

from .config import Settings
from .errors import TransientError

log = logging.getLogger("email_service.dedup")


class Claim(enum.Enum):
    CLAIMED = "claimed"  # send it
    DELIVERED = "delivered"  # sent before: ack, do not send
    IN_PROGRESS = "in_progress"  # another consumer is sending it right now: retry later
    UNCHECKED = "unchecked"  # the store is down and the fail mode is open: send without a guarantee


class DeliveryLedger:
    def __init__(self, client: redis.Redis, *, ttl_seconds: int, claim_seconds: int, fail_open: bool,
                 prefix: str = "welcome-mail:") -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.claim_seconds = claim_seconds
        self.fail_open = fail_open
        self.prefix = prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryLedger:
        assert settings.dedup_url is not None
        client = redis.Redis.from_url(settings.dedup_url.value, socket_timeout=2, socket_connect_timeout=2,
                                      retry_on_timeout=False)
        # The claim must outlive one whole SMTP exchange (several commands, each up to the timeout).
        return cls(client, ttl_seconds=settings.dedup_ttl_seconds, claim_seconds=int(settings.smtp_timeout * 4) + 10,
                   fail_open=settings.dedup_fail_mode == "open", prefix=settings.redis_key_prefix)

    def _keys(self, event_id: str) -> tuple[str, str]:
        return f"{self.prefix}delivered:{event_id}", f"{self.prefix}inflight:{event_id}"

    def _unavailable(self, action: str, exc: Exception) -> Claim:
        if self.fail_open:
            log.warning("dedup store unavailable, sending without duplicate check",
                        extra={"action": action, "error": repr(exc)[:200]})
            return Claim.UNCHECKED
        raise TransientError(f"dedup store unavailable ({action}): {exc.__class__.__name__}") from exc

    async def claim(self, event_id: str) -> Claim:
        delivered, inflight = self._keys(event_id)
        try:
            if not await self.client.set(inflight, "1", nx=True, ex=self.claim_seconds):
                return Claim.DELIVERED if await self.client.exists(delivered) else Claim.IN_PROGRESS
            if await self.client.exists(delivered):
                await self.client.delete(inflight)
                return Claim.DELIVERED
        except (RedisError, OSError) as exc:
            return self._unavailable("claim", exc)
        return Claim.CLAIMED

    async def record_delivered(self, event_id: str) -> None:
        delivered, inflight = self._keys(event_id)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(delivered, "1", nx=True, ex=self.ttl_seconds)
                pipe.delete(inflight)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # The mail is sent; only the record is missing. A redelivery would send it again.
            log.error("could not record a delivered event", extra={"event_id": event_id, "error": repr(exc)[:200]})

    async def release(self, event_id: str) -> None:
        """Drop the claim after a failed send, so a retry can claim it at once."""
        try:
            await self.client.delete(self._keys(event_id)[1])
        except (RedisError, OSError):
            pass  # the claim expires by itself

    async def close(self) -> None:
        await self.client.aclose()
