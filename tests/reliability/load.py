"""Signups sent the way a real client sends them: paced, with bounded concurrency, one Idempotency-Key per signup,
and a bounded number of retries after a 503 (honouring Retry-After) or a lost response (timeout, reset).

The key fixes the event id (UUIDv5, as the producer derives it), so every retry of one signup maps to one event,
and the client knows the event id even of a request whose response it never saw.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import httpx

from producer_service.events import event_id_for


@dataclass
class Signup:
    index: int
    key: str
    email: str
    name: str
    locale: str
    event_id: str  # what the producer derives from the key
    statuses: list[int] = field(default_factory=list)  # every HTTP status this signup got, in order
    transport_errors: int = 0  # attempts without a response (the request may still have been published)
    returned_event_id: str | None = None

    @property
    def accepted(self) -> bool:
        return 202 in self.statuses

    @property
    def response_lost(self) -> bool:
        return self.transport_errors > 0


class SignupLoad:
    """K signups at `rate` per second through at most `concurrency` requests at a time."""

    def __init__(self, base_url: str, count: int, *, run_id: str, rate: float, concurrency: int = 32,
                 max_attempts: int = 10, retry_after_cap: float = 2.0, seed: int = 0,
                 refused: frozenset[int] = frozenset()) -> None:
        self.base_url = base_url
        self.rate = rate
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.retry_after_cap = retry_after_cap
        self.rng = random.Random(seed)
        self.signups = [self._signup(run_id, i, i in refused) for i in range(count)]
        self.sent = 0  # signups started so far (the chaos tasks watch the progress)
        self.finished = asyncio.Event()
        self.seconds = 0.0

    @staticmethod
    def _signup(run_id: str, i: int, refused: bool) -> Signup:
        key = f"{run_id}-{i}"
        local = f"refused{i}" if refused else f"user{i}"
        locale, name = ("zh-CN", "李雷") if i % 5 == 0 else ("en", f"Ada Lovelace {i}")
        return Signup(i, key, f"{local}@example.com", name, locale, event_id_for(key))

    async def run(self) -> None:
        started = time.monotonic()
        slots = asyncio.Semaphore(self.concurrency)
        timeout = httpx.Timeout(15.0, connect=5.0)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout, limits=limits) as client:
                tasks = []
                for signup in self.signups:
                    due = started + signup.index / self.rate
                    if (wait := due - time.monotonic()) > 0:
                        await asyncio.sleep(wait)  # pacing the arrivals, not waiting for anything
                    self.sent += 1
                    tasks.append(asyncio.create_task(self._send(client, slots, signup)))
                await asyncio.gather(*tasks)
        finally:
            self.seconds = time.monotonic() - started
            self.finished.set()

    async def _send(self, client: httpx.AsyncClient, slots: asyncio.Semaphore, signup: Signup) -> None:
        body = {"email": signup.email, "name": signup.name, "locale": signup.locale}
        headers = {"Idempotency-Key": signup.key}
        for _ in range(self.max_attempts):
            async with slots:
                try:
                    response = await client.post("/v1/signups", json=body, headers=headers)
                except httpx.TransportError:
                    response = None
            if response is None:
                signup.transport_errors += 1
                await asyncio.sleep(self.rng.uniform(0.2, 0.6))  # client backoff
                continue
            signup.statuses.append(response.status_code)
            if response.status_code == 202:
                signup.returned_event_id = response.json().get("event_id")
                return
            if response.status_code != 503:
                return  # a valid signup must never get anything else; the outcome check reports it
            try:
                retry_after = float(response.headers.get("Retry-After", "1"))
            except ValueError:
                retry_after = 1.0
            await asyncio.sleep(min(retry_after, self.retry_after_cap) * self.rng.uniform(0.5, 1.0))

    # What the outcome table reports.
    def count_status(self, status: int) -> int:
        return sum(s.statuses.count(status) for s in self.signups)

    def accepted(self) -> list[Signup]:
        return [s for s in self.signups if s.accepted]
