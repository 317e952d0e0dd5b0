"""Health probes: is a service's endpoint answering 200 now, and a poller that keeps every answer with its time.

`ReadinessProbe` samples one `/readyz` every `interval` seconds; the failover and network-fault scenarios derive
from its samples how long a service said "not ready" (detection and recovery times).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httpx


async def http_ok(url: str, timeout: float = 2.0, client: httpx.AsyncClient | None = None) -> bool:
    """True when `url` answers 200 within `timeout`; False on any other answer or no answer."""
    try:
        if client is not None:
            return (await client.get(url, timeout=timeout)).status_code == 200
        async with httpx.AsyncClient(timeout=timeout) as own:
            return (await own.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class ReadinessProbe:
    """Polls one URL and keeps every answer as (monotonic time, ready?)."""

    name: str
    url: str
    interval: float = 0.1
    samples: list[tuple[float, bool]] = field(default_factory=list)

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.samples.append((time.monotonic(), await http_ok(self.url, timeout=1, client=client)))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    @property
    def ready(self) -> bool:
        return bool(self.samples) and self.samples[-1][1]

    def sampled_since(self, at: float) -> bool:
        return bool(self.samples) and self.samples[-1][0] > at

    def down_intervals(self, since: float, until: float = float("inf")) -> list[tuple[float, float]]:
        """Periods within [since, until] in which the URL did not answer 200 (from the first failing to the next
        good sample); a period still open at `until` ends there (a window's figures never reach past it), one
        still open at the last sample ends at that sample."""
        intervals: list[tuple[float, float]] = []
        start: float | None = None
        for at, ok in self.samples:
            if at < since or at > until:
                continue
            if not ok and start is None:
                start = at
            elif ok and start is not None:
                intervals.append((start, at))
                start = None
        if start is not None:
            intervals.append((start, min(until, self.samples[-1][0])))
        return intervals

    def down_seconds(self, since: float, until: float = float("inf")) -> float:
        return sum(end - start for start, end in self.down_intervals(since, until))

    def detected(self, fault: float) -> float | None:
        """Seconds from `fault` to the first sample after it that was not ready; None if none was."""
        down = next((at for at, ok in self.samples if at >= fault and not ok), None)
        return None if down is None else down - fault

    def recovered(self, heal: float) -> float | None:
        """Seconds from `heal` to the sample from which on every sample was ready (0 if it never went down after
        `heal`); None while the last sample is not ready."""
        if not self.ready:
            return None
        last_down = max((at for at, ok in self.samples if not ok), default=None)
        back = next(at for at, ok in self.samples if ok and (last_down is None or at > last_down))
        return max(0.0, back - heal)


class ProbeSet:
    """Several probes polled together until `stop()`: `async with ProbeSet([...]) as probes:`."""

    def __init__(self, probes: list[ReadinessProbe]) -> None:
        self.probes = probes
        self._stop = asyncio.Event()
        self._client = httpx.AsyncClient()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> ProbeSet:
        self._tasks = [asyncio.create_task(p.run(self._client, self._stop)) for p in self.probes]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._client.aclose()

    def all_ready_since(self, at: float) -> bool:
        return all(p.ready and p.sampled_since(at) for p in self.probes)
