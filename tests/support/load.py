"""The one signup load client of the suites: signups sent the way a real client sends them.

- One Idempotency-Key per signup; the key fixes the event id (UUIDv5, as the producer derives it), so every retry
  of one signup maps to one event and the client knows the event id even of a request whose answer it never saw.
- A 503 is retried after its Retry-After (capped, with jitter), a request without an answer (timeout, reset) after
  a short backoff; each signup has a bounded number of attempts and, optionally, a time budget.
- Open loop (`rate` set): a new signup every 1/rate seconds whatever the others do, `count` of them or until the
  stop event is set. Closed loop (`rate=None`): `concurrency` clients, each sending its next signup when the last
  one is answered.

Every answer is kept with its time, so the suites derive from one list what they report: statuses, 503 windows,
requests without an answer, signup-to-mail waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from producer_service.events import event_id_for

ACCEPTED, UNAVAILABLE = 202, 503


@dataclass
class Signup:
    index: int
    key: str
    email: str
    name: str
    locale: str
    event_id: str  # what the producer derives from the key
    refused: bool  # the SMTP server is to refuse this address (550)
    answers: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, "202" / "503" / error name)
    first_sent: float | None = None
    accepted_at: float | None = None
    returned_event_id: str | None = None

    @property
    def statuses(self) -> list[int]:
        """Every HTTP status this signup got, in order."""
        return [int(answer) for _, answer in self.answers if answer.isdigit()]

    @property
    def transport_errors(self) -> int:
        """Attempts without an answer (the request may still have been published)."""
        return sum(1 for _, answer in self.answers if not answer.isdigit())

    @property
    def accepted(self) -> bool:
        return self.accepted_at is not None

    @property
    def response_lost(self) -> bool:
        return self.transport_errors > 0

    def body(self) -> dict[str, str]:
        return {"email": self.email, "name": self.name, "locale": self.locale}


class SignupLoad:
    """Signups against one producer; see the module docstring for the two loops."""

    def __init__(self, base_url: str, *, run_id: str, rate: float | None, count: int | None = None,
                 concurrency: int = 32, max_attempts: int = 10, max_seconds: float | None = None,
                 retry_after_cap: float = 2.0, refused_every: int = 0, seed: int = 0,
                 on_signup: Callable[[Signup], None] | None = None) -> None:
        assert count is not None or rate is not None, "a closed loop needs a count"
        self.base_url = base_url
        self.run_id = run_id
        self.rate = rate
        self.count = count
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.max_seconds = max_seconds
        self.retry_after_cap = retry_after_cap
        self.refused_every = refused_every
        self.on_signup = on_signup
        self.rng = random.Random(seed)
        self.signups: list[Signup] = []
        self.finished = asyncio.Event()
        self.seconds = 0.0  # from the first signup until the last one was answered or gave up

    @property
    def sent(self) -> int:
        """Signups started so far (chaos tasks watch the progress)."""
        return len(self.signups)

    def new_signup(self) -> Signup:
        i = len(self.signups)
        refused = bool(self.refused_every) and i % self.refused_every == self.refused_every - 1
        local = f"refused{i}" if refused else f"user{i}"
        locale, name = ("zh-CN", "李雷") if i % 5 == 0 else ("en", f"Ada Lovelace {i}")
        key = f"{self.run_id}-{i}"
        signup = Signup(i, key, f"{local}.{self.run_id}@example.com", name, locale, event_id_for(key), refused)
        self.signups.append(signup)
        if self.on_signup is not None:
            self.on_signup(signup)
        return signup

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Send the load; returns when no more signups are due and every started one has its end."""
        started = time.monotonic()
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency,
                              # below uvicorn's 5 s keep-alive, so an idle connection is dropped here before the
                              # server closes it under a request
                              keepalive_expiry=2)
        slots = asyncio.Semaphore(self.concurrency)
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(15.0, connect=5.0),
                                         limits=limits) as client:
                if self.rate is None:
                    await asyncio.gather(*(self._closed_loop_client(client, slots)
                                           for _ in range(self.concurrency)))
                else:
                    await self._open_loop(client, slots, started, self.rate, stop)
        finally:
            self.seconds = time.monotonic() - started
            self.finished.set()

    async def _open_loop(self, client: httpx.AsyncClient, slots: asyncio.Semaphore, started: float, rate: float,
                         stop: asyncio.Event | None) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            while (self.count is None or self.sent < self.count) and not (stop and stop.is_set()):
                due = started + self.sent / rate
                if (wait := due - time.monotonic()) > 0:
                    if stop is None:
                        await asyncio.sleep(wait)  # pacing the arrivals, not waiting for anything
                    else:
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(stop.wait(), wait)
                        if stop.is_set():
                            break
                tasks.append(asyncio.create_task(self._send(client, slots, self.new_signup())))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _closed_loop_client(self, client: httpx.AsyncClient, slots: asyncio.Semaphore) -> None:
        assert self.count is not None
        while self.sent < self.count:
            await self._send(client, slots, self.new_signup())

    async def _send(self, client: httpx.AsyncClient, slots: asyncio.Semaphore, signup: Signup) -> None:
        signup.first_sent = time.monotonic()
        deadline = signup.first_sent + self.max_seconds if self.max_seconds is not None else float("inf")
        headers = {"Idempotency-Key": signup.key}
        for _ in range(self.max_attempts):
            async with slots:
                try:
                    response = await client.post("/v1/signups", json=signup.body(), headers=headers)
                except httpx.TransportError as error:
                    response = None
                    signup.answers.append((time.monotonic(), type(error).__name__))
            if response is None:
                wait = self.rng.uniform(0.2, 0.6)  # client backoff
            else:
                signup.answers.append((time.monotonic(), str(response.status_code)))
                if response.status_code == ACCEPTED:
                    signup.returned_event_id = response.json().get("event_id")
                    signup.accepted_at = time.monotonic()
                    return
                if response.status_code != UNAVAILABLE:
                    return  # a valid signup must never get anything else; the suites report it
                wait = self._retry_after(response)
            if time.monotonic() + wait > deadline:
                return
            await asyncio.sleep(wait)

    def _retry_after(self, response: httpx.Response) -> float:
        try:
            retry_after = float(response.headers.get("Retry-After", "1"))
        except ValueError:
            retry_after = 1.0
        return min(retry_after, self.retry_after_cap) * self.rng.uniform(0.5, 1.0)

    # -- what the reports count

    def accepted(self) -> list[Signup]:
        return [s for s in self.signups if s.accepted]

    def count_status(self, status: int) -> int:
        return sum(s.statuses.count(status) for s in self.signups)

    def answered_at(self, what: str) -> list[float]:
        """When the producer answered `what` (a status code, or an httpx error name)."""
        return sorted(at for s in self.signups for at, answer in s.answers if answer == what)

    def transport_errors(self) -> list[tuple[float, str]]:
        """(time, error name) of every request that got no HTTP answer at all."""
        return sorted((at, what) for s in self.signups for at, what in s.answers if not what.isdigit())
