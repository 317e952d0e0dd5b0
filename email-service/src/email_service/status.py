"""The delivery record: one Redis hash per event, `{prefix}delivery:{event_id}`, saying where its welcome mail is.

Written as the event moves (the producer writes `queued`; this service every later state, `dlq replay` and
`dlq purge` theirs), read by the producer's GET /v1/signups/{event_id} and by `email-service status`. It is also
the dedup record (dedup.py): the claim and the check for a delivery made before are one script on this key.

Invariants:
- it never holds the address or the name: only the fields in FIELDS;
- a write that fails never fails or delays the mail: it is counted (email_status_write_failures_total), logged,
  and the mail goes on. Only the claim may hold a mail back, and only as DEDUP_FAIL_MODE says (dedup.py);
- `sent_at` is set once the SMTP server accepted the mail, and kept: the record says "delivered" from then on
  whatever state follows (a duplicate skipped, a replay);
- every write renews the key's expiry to DELIVERY_STATUS_TTL_SECONDS.

The provider's reply is the one to DATA: aiosmtplib only returns normally when its code is 250 (RFC 5321 4.3.2) and
hands back the text, where providers put their queue id ("2.0.0 Ok: queued as 4XyZ").
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import redis.asyncio as redis
from redis.exceptions import RedisError

from .config import Settings
from .dedup import CLAIM_SCRIPT, Claim, legacy_keys

log = logging.getLogger("email_service.status")

RECORD_KEY = "delivery:"  # after the prefix: {prefix}delivery:{event_id}
EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_TEXT = 500  # the longest error or reply text kept
ACCEPTED_CODE = 250  # the only code aiosmtplib accepts for DATA


class DeliveryStatus(enum.StrEnum):
    """The `status` field. The producer writes QUEUED; the dlq commands REPLAYED and PURGED; this service the rest."""

    QUEUED = "queued"  # the broker confirmed the event to the producer
    SENDING = "sending"  # a consumer claimed it and is talking to the SMTP server
    SENT = "sent"  # the SMTP server accepted the mail
    RETRYING = "retrying"  # a failed attempt; the copy waits in a retry tier (next_tier)
    DEFERRED = "deferred"  # throttled; the copy waits in the deferral queue (attempt not counted)
    DEAD_LETTERED = "dead_lettered"  # in the dead-letter queue (reason)
    REPLAYED = "replayed"  # moved back from the dead-letter queue by `dlq replay`
    PURGED = "purged"  # removed from the dead-letter queue for good by `dlq purge`
    DUPLICATE_SKIPPED = "duplicate_skipped"  # delivered again after it was sent; acked without a second mail


# Every field a record may hold (the claim's expiry `claim_until` is internal and not shown).
FIELDS = ("status", "attempts", "last_error", "reason", "next_tier", "reply_code", "reply_text", "message_id",
          "locale", "replays", "first_update", "last_update", "sent_at")
INTERNAL_FIELDS = ("claim_until",)


def rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shown(raw: dict) -> dict[str, object]:
    """A record as HGETALL returned it, as the lookups show it: the known fields, numbers as numbers."""
    text = {(k.decode() if isinstance(k, bytes) else k): (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
            for k, v in raw.items()}
    record: dict[str, object] = {name: text[name] for name in FIELDS if name in text}
    for name in ("attempts", "reply_code", "replays"):
        if name in record:
            record[name] = int(str(record[name]))
    return record


@dataclass(frozen=True)
class Accepted:
    """What the SMTP server said when it took the mail."""

    reply: str
    message_id: str


class DeliveryRecords:
    """The records in one Redis: written by the handler and the dlq commands, read by `email-service status`."""

    def __init__(self, client: redis.Redis, *, ttl_seconds: int, claim_seconds: int, dedup: bool, fail_open: bool,
                 prefix: str = "welcome-mail:", on_write_failure: Callable[[], object] = lambda: None) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.claim_seconds = claim_seconds
        self.dedup = dedup
        self.fail_open = fail_open
        self.prefix = prefix
        self.on_write_failure = on_write_failure
        self._claim = client.register_script(CLAIM_SCRIPT)

    @classmethod
    def from_settings(cls, settings: Settings,
                      on_write_failure: Callable[[], object] = lambda: None) -> DeliveryRecords:
        assert settings.redis_url is not None
        # One connection per message in flight at most (redis-py's pool refuses more than its maximum, 100 by default).
        client = redis.Redis.from_url(settings.redis_url.value, socket_timeout=2, socket_connect_timeout=2,
                                      retry_on_timeout=False, max_connections=max(100, settings.concurrency + 10))
        # The claim must outlive one whole SMTP exchange (several commands, each up to the timeout).
        return cls(client, ttl_seconds=settings.record_ttl_seconds,
                   claim_seconds=int(settings.smtp_timeout * 4) + 10, dedup=settings.dedup_enabled,
                   fail_open=settings.dedup_fail_mode == "open", prefix=settings.redis_key_prefix,
                   on_write_failure=on_write_failure)

    def key(self, event_id: str) -> str:
        return f"{self.prefix}{RECORD_KEY}{event_id}"

    def _failed(self, action: str, event_id: str | None, exc: Exception) -> None:
        self.on_write_failure()
        log.warning("could not write the delivery record", extra={
            "event_id": event_id, "action": action, "error": repr(exc)[:200]})

    async def claim(self, event_id: str, *, attempt: int, locale: str, legacy_event_id: str | None = None) -> Claim:
        """Mark the event `sending` and, with dedup, claim it: one round trip (dedup.py states the protocol)."""
        now = time.time()
        keys = [self.key(event_id), *legacy_keys(self.prefix, event_id, legacy_event_id)]
        try:
            result = await self._claim(keys=keys, args=[
                int(now * 1000), rfc3339(now), self.claim_seconds * 1000, self.ttl_seconds, locale, attempt,
                1 if self.dedup else 0])
        except (RedisError, OSError) as exc:
            self._failed("claim", event_id, exc)
            if not self.dedup:
                return Claim.UNCHECKED
            return self._unavailable(exc)
        return Claim(result.decode() if isinstance(result, bytes) else result)

    def _unavailable(self, exc: Exception) -> Claim:
        from .errors import TransientError

        if self.fail_open:
            log.warning("dedup store unavailable, sending without duplicate check", extra={"error": repr(exc)[:200]})
            return Claim.UNCHECKED
        raise TransientError(f"dedup store unavailable (claim): {exc.__class__.__name__}") from exc

    async def sent(self, event_id: str, accepted: Accepted) -> None:
        now = rfc3339(time.time())
        await self._write("sent", event_id, {
            "status": DeliveryStatus.SENT.value, "sent_at": now, "last_update": now, "reply_code": ACCEPTED_CODE,
            "reply_text": accepted.reply[:MAX_TEXT], "message_id": accepted.message_id},
            drop=(*INTERNAL_FIELDS, "next_tier"))

    async def failed(self, event_id: str, status: DeliveryStatus, *, attempt: int, error: str,
                     next_tier: str | None = None, reason: str | None = None) -> None:
        """An attempt that did not end in a mail: retrying, deferred or dead_lettered; drops the claim."""
        fields: dict[str, object] = {"status": status.value, "attempts": attempt, "last_error": error[:MAX_TEXT],
                                     "last_update": rfc3339(time.time())}
        if next_tier is not None:
            fields["next_tier"] = next_tier
        if reason is not None:
            fields["reason"] = reason
        drop = INTERNAL_FIELDS if next_tier is not None else (*INTERNAL_FIELDS, "next_tier")
        await self._write(status.value, event_id, fields, drop=drop)

    async def moved(self, event_id: str | None, status: DeliveryStatus, replays: int | None = None) -> None:
        """What a dlq command did to a letter: replayed (with the replay count) or purged."""
        if event_id is None or not EVENT_ID.fullmatch(event_id):
            return
        fields: dict[str, object] = {"status": status.value, "last_update": rfc3339(time.time())}
        if replays is not None:
            fields["replays"] = replays
        await self._write(status.value, event_id, fields)

    async def _write(self, action: str, event_id: str, fields: dict[str, object], drop: tuple[str, ...] = ()) -> None:
        """One round trip: set the fields, drop `drop` (the claim, a tier no longer waited in), renew the expiry."""
        key = self.key(event_id)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.hsetnx(key, "first_update", str(fields["last_update"]))
                if drop:
                    pipe.hdel(key, *drop)
                pipe.expire(key, self.ttl_seconds)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(action, event_id, exc)

    async def read(self, event_ids: Iterable[str]) -> dict[str, dict[str, object] | None]:
        """The records of these events (None: no record). Raises RedisError/OSError when Redis cannot be read."""
        ids = list(event_ids)
        async with self.client.pipeline(transaction=False) as pipe:
            for event_id in ids:
                pipe.hgetall(self.key(event_id))
            raws = await pipe.execute()
        return {event_id: (shown(raw) if raw else None) for event_id, raw in zip(ids, raws, strict=True)}

    async def summary(self, since: float, batch: int = 1000) -> tuple[Counter[str], int]:
        """Counts by status of the records updated since `since` (epoch seconds), and how many were scanned.
        A SCAN over the prefix: for an operator, not for a hot path."""
        counts: Counter[str] = Counter()
        scanned = 0
        threshold = rfc3339(since)
        keys: list[bytes] = []

        async def flush() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, "status", "last_update")
                for status, updated in await pipe.execute():
                    if status is not None and (updated or b"").decode() >= threshold:
                        counts[status.decode()] += 1
            keys.clear()

        async for key in self.client.scan_iter(match=f"{self.prefix}{RECORD_KEY}*", count=batch):
            scanned += 1
            keys.append(key)
            if len(keys) >= batch:
                await flush()
        if keys:
            await flush()
        return counts, scanned

    async def close(self) -> None:
        await self.client.aclose()
