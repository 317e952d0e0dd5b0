"""Delivery status on the producer: the `queued` write after each accepted signup, and GET /v1/signups/{event_id}.

The records are Redis hashes the email service writes (email_service/status.py owns their layout; this is the
producer's copy of the key and the field names, and tests/contract fails when the two drift apart).

Invariants:
- the `queued` write runs after the 202 is decided, in a task of its own: it never delays or fails a signup, and it
  never overwrites a later state (every field is set only if absent: the email service may have been faster);
- the lookup needs STATUS_API_TOKEN as a bearer token, compared in constant time, before anything else is looked
  at: without it nobody learns whether an id exists. It answers with the record's fields only, never an address
  or a name (the record holds none);
- a record of the previous version (a dedup key `{prefix}delivered:{id}`, before records existed) answers as
  `sent` with `legacy: true` until it expires (DEDUP_TTL_SECONDS).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone

import redis.asyncio as redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .config import Settings

log = logging.getLogger("producer_service.status")

RECORD_KEY = "delivery:"  # {prefix}delivery:{event_id}, as email_service.status.RECORD_KEY
LEGACY_DELIVERED_KEY = "delivered:"  # the previous version's dedup key
# The fields a record may hold, as email_service.status.FIELDS; the lookup shows these and nothing else.
FIELDS = ("status", "attempts", "last_error", "reason", "next_tier", "reply_code", "reply_text", "message_id",
          "locale", "replays", "first_update", "last_update", "sent_at")
NUMBERS = ("attempts", "reply_code", "replays")
EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_PENDING_WRITES = 10_000  # queued writes in flight; beyond it they are dropped (counted) rather than piling up


def _rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _shown(raw: dict[bytes, bytes]) -> dict[str, object]:
    text = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
    record: dict[str, object] = {name: text[name] for name in FIELDS if name in text}
    for name in NUMBERS:
        if name in record:
            record[name] = int(str(record[name]))
    return record


class DeliveryStatus:
    """The records in the producer's REDIS_URL: writes `queued`, reads for the lookup route."""

    def __init__(self, settings: Settings, on_write_failure: Callable[[], object] = lambda: None) -> None:
        assert settings.redis_url is not None
        self.client = redis.Redis.from_url(settings.redis_url.value, socket_timeout=2, socket_connect_timeout=2,
                                           retry_on_timeout=False)
        self.prefix = settings.redis_key_prefix
        self.ttl_seconds = settings.delivery_status_ttl_seconds
        self.on_write_failure = on_write_failure
        self._pending: set[asyncio.Task] = set()

    def queued(self, event_id: str, locale: str) -> None:
        """Write `queued` in the background (fire and forget; failures counted and logged)."""
        if len(self._pending) >= MAX_PENDING_WRITES:
            self.on_write_failure()
            return
        task = asyncio.get_running_loop().create_task(self._write_queued(event_id, locale))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write_queued(self, event_id: str, locale: str) -> None:
        key = f"{self.prefix}{RECORD_KEY}{event_id}"
        now = _rfc3339(time.time())
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for field, value in (("status", "queued"), ("locale", locale), ("first_update", now),
                                     ("last_update", now)):
                    pipe.hsetnx(key, field, value)
                pipe.expire(key, self.ttl_seconds, nx=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.on_write_failure()
            log.warning("could not write the queued record", extra={"event_id": event_id, "error": repr(exc)[:200]})

    async def read(self, event_id: str) -> dict[str, object] | None:
        """The record, or None when there is none. Raises RedisError/OSError when Redis cannot be read."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{self.prefix}{RECORD_KEY}{event_id}")
            pipe.exists(f"{self.prefix}{LEGACY_DELIVERED_KEY}{event_id}")
            raw, legacy = await pipe.execute()
        if raw:
            return _shown(raw)
        return {"status": "sent", "legacy": True} if legacy else None

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=3)
        await self.client.aclose()


class StatusRoute:
    """GET /v1/signups/{event_id}: 501 without REDIS_URL or STATUS_API_TOKEN, 401, 400, 404, 200, 503."""

    def __init__(self, settings: Settings, status: DeliveryStatus | None,
                 problem: Callable[..., Response]) -> None:
        self.settings = settings
        self.status = status
        self.problem = problem
        token = settings.status_api_token
        self._expected = f"Bearer {token.value}".encode() if token is not None else None

    def _authorized(self, request: Request) -> bool:
        assert self._expected is not None
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        return hmac.compare_digest(given, self._expected)

    async def lookup(self, request: Request) -> Response:
        if self.status is None:
            return self.problem(501, "not_configured", "delivery status needs REDIS_URL (the Redis the email "
                                "service writes the records to); it is not set")
        if self._expected is None:
            return self.problem(501, "not_configured", "delivery status lookups need STATUS_API_TOKEN; it is not set")
        if not self._authorized(request):
            return self.problem(401, "unauthorized", "send Authorization: Bearer <STATUS_API_TOKEN>",
                                headers={"WWW-Authenticate": 'Bearer realm="welcome-mail"'})
        event_id = request.path_params["event_id"]
        if not EVENT_ID.fullmatch(event_id):
            return self.problem(400, "invalid_event_id", "the event id must be a lowercase UUID, as POST /v1/signups "
                                "returned it")
        try:
            record = await self.status.read(event_id)
        except (RedisError, OSError) as exc:
            log.warning("delivery status unavailable", extra={"event_id": event_id, "error": repr(exc)[:200]})
            return self.problem(503, "status_unavailable", "the delivery status store (Redis) does not answer; "
                                "retry later", headers={"Retry-After": str(self.settings.retry_after_seconds)})
        if record is None:
            return self.problem(404, "not_found", "no delivery record for this event id (never accepted, or older "
                                "than DELIVERY_STATUS_TTL_SECONDS)")
        return JSONResponse({"event_id": event_id, **record})
