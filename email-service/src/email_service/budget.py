"""The deployment-wide send budget: SEND_RATE_LIMIT mails per second and SMTP_MAX_CONNECTIONS connections open at
once, shared through Redis by every replica, however many there are.

Rate, GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): one key holds the theoretical
arrival time of the next send, in Redis server microseconds. A send reserves the next free moment; the script answers
how long to wait for it, or refuses (reserving nothing) when that is longer than the caller may wait. Sends are
spaced 1/rate apart across all replicas, without bursts, and a waiting sender sleeps exactly until its moment instead
of polling. Every time is Redis's own (`TIME` inside the scripts): the replicas' clocks never matter.

Connections: a sorted set of leases (member: replica id and connection number; score: expiry in server
microseconds). Opening a connection takes a lease; a replica renews its leases every RENEW_SECONDS, so those of a
replica that died return after at most LEASE_SECONDS. A replica also renews a membership lease, and takes no more
than its share of the connections (the cap divided by the live replicas, rounded up): a replica that started later
gets connections as soon as the others trim their surplus (the pool closes connections above `connection_share`).

While Redis is unreachable each replica goes on alone with the share it last saw: rate / replicas and max(1,
connections // replicas), `replicas` being the live count at the last reservation or renewal (1 if there was none),
its pace continuing after the last moment it had reserved in Redis (so the switch does not add a burst). The
provider then sees at most the budget, plus one full budget for each replica started during the outage (it never saw
the others) and at most one connection per replica above the cap when the cap is smaller than the replica count.
Nothing is dead-lettered or counted as an attempt because of Redis; the renewal task reconnects every RENEW_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import socket
import time
import uuid

import redis.asyncio as redis
from redis.exceptions import RedisError

from .errors import Throttled

log = logging.getLogger("email_service.budget")

LEASE_SECONDS = 15.0
RENEW_SECONDS = LEASE_SECONDS / 3

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local wait = tat - now
local replicas = redis.call('ZCOUNT', KEYS[2], now, '+inf')
if wait > tonumber(ARGV[2]) then return {0, wait, replicas} end
local next_tat = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.floor((next_tat - now) / 1000) + 1000)
return {1, wait, replicas}
"""

_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local cap = tonumber(ARGV[2])
local replicas = math.max(1, redis.call('ZCARD', KEYS[2]))
local share = math.ceil(cap / replicas)
local mine = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, 1, #ARGV[4]) == ARGV[4] then mine = mine + 1 end
end
if redis.call('ZCARD', KEYS[1]) >= cap or mine >= share then return {0, share} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[3]) / 1000) * 2)
return {1, share}
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local expiry = now + tonumber(ARGV[1])
local keep = math.floor(tonumber(ARGV[1]) / 1000) * 2
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], expiry, ARGV[2])
redis.call('PEXPIRE', KEYS[2], keep)
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
if #ARGV >= 3 then redis.call('PEXPIRE', KEYS[1], keep) end
return redis.call('ZCARD', KEYS[2])
"""


class SendBudget:
    def __init__(self, client: redis.Redis, *, rate: float | None, connections: int | None, prefix: str) -> None:
        self.client = client
        self.rate = rate
        self.connections = connections
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.replicas = 1  # live replicas at the last renewal
        self.shared = True  # False while Redis is unreachable: the local fallback decides
        self.held: set[str] = set()
        self.connection_share = connections
        self._keys = (f"{prefix}budget:rate", f"{prefix}budget:connections", f"{prefix}budget:replicas")
        self._reserve = client.register_script(_RESERVE)
        self._lease = client.register_script(_LEASE)
        self._renew = client.register_script(_RENEW)
        self._numbers = itertools.count(1)
        self._local_next = 0.0
        self._renewer: asyncio.Task | None = None

    @classmethod
    def from_url(cls, url: str, *, rate: float | None, connections: int | None, prefix: str) -> SendBudget:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1, retry_on_timeout=False)
        return cls(client, rate=rate, connections=connections, prefix=prefix)

    async def start(self) -> None:
        await self.renew()
        self._renewer = asyncio.create_task(self._renew_forever(), name="send-budget-renewal")

    async def reserve(self, max_wait: float) -> float:
        """Reserve the next send; returns the seconds to wait before it. Raises Throttled when that is longer than
        `max_wait` (nothing reserved then)."""
        if self.rate is None:
            return 0.0
        if self.shared:
            try:
                granted, wait_us, replicas = await self._reserve(keys=[self._keys[0], self._keys[2]],
                                                                 args=[int(1e6 / self.rate), int(max_wait * 1e6)])
            except (RedisError, OSError) as exc:
                self._lost(exc)
            else:
                self.replicas = max(1, int(replicas))
                if not granted:
                    raise Throttled(f"send budget: next free moment in {wait_us / 1e6:.2f}s", None)
                # Where the local share would go on from, should Redis go away: after the moments already
                # reserved there (reservations reach at most max_wait ahead, interleaved across replicas).
                self._local_next = time.monotonic() + wait_us / 1e6 + self.replicas / self.rate
                return float(wait_us) / 1e6
        return self._reserve_locally(max_wait)

    def _reserve_locally(self, max_wait: float) -> float:
        assert self.rate is not None
        now = time.monotonic()
        start = max(now, self._local_next)
        if start - now > max_wait:
            raise Throttled(f"send budget (local share): next free moment in {start - now:.2f}s", None)
        self._local_next = start + self.replicas / self.rate
        return start - now

    async def lease_connection(self) -> str | None:
        """A lease for one more SMTP connection, or None when this replica may not open one now."""
        lease = f"{self.replica}:{next(self._numbers)}"
        if self.connections is None:
            return lease
        if self.shared:
            try:
                granted, share = await self._lease(keys=self._keys[1:], args=[
                    lease, self.connections, int(LEASE_SECONDS * 1e6), f"{self.replica}:"])
            except (RedisError, OSError) as exc:
                self._lost(exc)
            else:
                self.connection_share = int(share)
                if not granted:
                    return None
                self.held.add(lease)
                return lease
        if len(self.held) >= max(1, self.connections // self.replicas):
            return None
        self.held.add(lease)
        return lease

    async def release_connection(self, lease: str) -> None:
        self.held.discard(lease)
        if self.connections is not None and self.shared:
            with contextlib.suppress(RedisError, OSError):
                await self.client.zrem(self._keys[1], lease)

    async def renew(self) -> None:
        """Renew this replica's membership and leases; learn how many replicas share the budget."""
        try:
            replicas = await self._renew(keys=self._keys[1:],
                                         args=[int(LEASE_SECONDS * 1e6), self.replica, *sorted(self.held)])
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return
        if not self.shared:
            log.info("send budget shared through Redis again")
        self.shared = True
        self.replicas = max(1, int(replicas))
        if self.connections is not None:
            self.connection_share = math.ceil(self.connections / self.replicas)

    def _lost(self, exc: Exception) -> None:
        if self.shared:
            log.error("send budget: Redis unreachable, going on with this replica's share",
                      extra={"replicas": self.replicas, "error": repr(exc)[:200]})
        self.shared = False
        if self.connections is not None:
            self.connection_share = max(1, self.connections // self.replicas)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            await self.renew()

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        with contextlib.suppress(RedisError, OSError):
            await self.client.zrem(self._keys[2], self.replica)
            if self.held:
                await self.client.zrem(self._keys[1], *self.held)
        await self.client.aclose()
