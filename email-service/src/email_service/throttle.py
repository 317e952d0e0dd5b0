"""Per-process back-pressure: how many SMTP exchanges this process runs at once, and how fast it starts new ones.

A provider that throttles is answered by slowing down, the way TCP answers loss (AIMD):

- A throttling reply that caps connections (Throttled.limits_connections) sets the concurrency limit to the
  connections the provider admitted (those this process had open besides the refused one), else halves it; one
  that caps the mail rate sets the pace to DECREASE x the rate at which this process was starting exchanges. Each
  at most once per REACTION_SECONDS: replies to exchanges already under way count once.
- While the provider accepts, the limit grows by one per `limit` accepted mails, at most once per
  REACTION_SECONDS (so a cap is probed once a second, not once per exchange), and the pace by GROWTH (at least
  MIN_GROWTH) per second; after CALM_SECONDS without a throttling reply the pace is unlimited again.
- 1 <= limit <= ceiling (CONCURRENCY). Exchanges running when the limit drops finish; no new one starts until
  in_use < limit. The pool closes idle connections above the limit.
- No caller waits longer than its `max_wait`: `acquire()` raises Throttled (stage None) instead, and the handler
  defers the mail, so throttled mail waits in RabbitMQ, not in this process.

Nothing here talks to the network: the deployment-wide budget (budget.py) comes on top.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from .errors import Throttled

REACTION_SECONDS = 1.0
DECREASE = 0.8
GROWTH = 0.10  # of the pace, per second without a throttling reply
MIN_GROWTH = 1.0  # mails per second, per second: a low pace recovers in seconds, not minutes
CALM_SECONDS = 30.0
MIN_RATE = 0.2  # mails per second: the slowest pace a process sinks to
RATE_WINDOW_SECONDS = 2.0  # exchanges started are counted over this window to know the pace that was too fast


class SendGovernor:
    def __init__(self, ceiling: int, *, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[SendGovernor], None] = lambda governor: None) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self.rate: float | None = None  # mails per second; None = unpaced
        self.in_use = 0
        self._waiting = 0  # callers of _acquire waiting for a slot
        self._clock = clock
        self._on_change = on_change
        self._changed = asyncio.Condition()
        self._next_start = 0.0
        self._started: collections.deque[float] = collections.deque()
        self._since_increase = 0
        self._last_connection_cut = -REACTION_SECONDS
        self._last_increase = -REACTION_SECONDS
        self._last_rate_cut = -REACTION_SECONDS
        self._last_throttle = -CALM_SECONDS
        self._last_growth = 0.0

    @contextlib.asynccontextmanager
    async def slot(self, max_wait: float) -> AsyncIterator[float]:
        """Hold one of `limit` exchange slots, started no sooner than the pace allows; yields the seconds waited.
        Raises Throttled (stage None) when that would take longer than `max_wait`."""
        waited = await self._acquire(max_wait)
        try:
            yield waited
        finally:
            await self._release()

    async def _release(self) -> None:
        self.in_use -= 1
        if self._waiting:  # nobody waits: no one to wake (the common case, and a lock round trip saved per mail)
            async with self._changed:
                self._changed.notify()

    async def _acquire(self, max_wait: float) -> float:
        started = self._clock()
        if self.in_use < self.limit and not self._waiting:  # a free slot and no queue to jump: take it at once
            self.in_use += 1
        else:
            self._waiting += 1
            try:
                async with self._changed:
                    await asyncio.wait_for(self._changed.wait_for(lambda: self.in_use < self.limit), max_wait)
                    self.in_use += 1
            except asyncio.TimeoutError:
                raise Throttled(f"no SMTP slot within {max_wait:g}s (limit {self.limit})", None) from None
            finally:
                self._waiting -= 1
        now = self._clock()
        self._started.append(now)
        while self._started[0] < now - RATE_WINDOW_SECONDS:
            self._started.popleft()
        self._grow(now)
        if self.rate is not None:
            start_at = max(now, self._next_start)
            if start_at - started > max_wait:
                await self._release()
                raise Throttled(f"paced at {self.rate:.2f} mails/s, no start within {max_wait:g}s", None)
            self._next_start = start_at + 1 / self.rate
            if start_at > now:
                await asyncio.sleep(start_at - now)
        return self._clock() - started

    def accepted(self) -> None:
        """The provider accepted a mail."""
        self._since_increase += 1
        if self.limit < self.ceiling and self._since_increase >= self.limit:
            now = self._clock()
            if now - self._last_increase >= REACTION_SECONDS:
                self._since_increase = 0
                self._last_increase = now
                self._set_limit(self.limit + 1)

    def throttled(self, failure: Throttled, admitted: int | None = None) -> None:
        """The provider answered with a throttling reply; `admitted`: the connections it had let this process open
        besides the one it refused, when known."""
        now = self._clock()
        self._last_throttle = now
        if failure.limits_connections:
            if now - self._last_connection_cut >= REACTION_SECONDS:
                self._last_connection_cut = now
                self._last_increase = now
                self._since_increase = 0
                cut = admitted if admitted is not None and 0 < admitted < self.limit else self.limit // 2
                self._set_limit(max(1, cut))
        elif now - self._last_rate_cut >= REACTION_SECONDS:
            self._last_rate_cut = now
            self._last_growth = now
            started = len(self._started) / RATE_WINDOW_SECONDS
            self._set_rate(max(MIN_RATE, DECREASE * (started if self.rate is None else min(self.rate, started))))

    def _grow(self, now: float) -> None:
        if self.rate is None:
            return
        if now - self._last_throttle >= CALM_SECONDS:
            self._set_rate(None)
        elif now - self._last_growth >= 1.0:
            elapsed = now - self._last_growth
            self._set_rate(self.rate + max(GROWTH * self.rate, MIN_GROWTH) * elapsed)
            self._last_growth = now

    def _set_limit(self, limit: int) -> None:
        # A larger limit lets waiters in at the next release (one is due: in_use >= the old limit >= 1).
        self.limit = limit
        self._on_change(self)

    def _set_rate(self, rate: float | None) -> None:
        self.rate = rate
        self._on_change(self)
