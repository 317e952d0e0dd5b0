"""A fleet of email-service processes: N slots, each of which can be SIGKILLed, SIGTERMed and started again.

Invariant: each start of a slot gets a fresh metrics port and a fresh log file, and `logs` lists every log file
ever written, so an outcome can read everything every incarnation wrote.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from .ports import free_port
from .probes import http_ok
from .processes import ServiceProcess, email_process, stop_all
from .prometheus import scrape


class ConsumerFleet:
    def __init__(self, env: dict[str, str], size: int, workdir: Path, shutdown_timeout: float = 10,
                 slot_env: dict[int, dict[str, str]] | None = None) -> None:
        self.env = env
        self.slot_env = slot_env or {}  # settings of one slot only (e.g. its AMQP_URL through a fault proxy)
        self.workdir = workdir
        self.shutdown_timeout = shutdown_timeout
        self.slots: list[ServiceProcess | None] = [None] * size
        self.ports: list[int] = [0] * size
        self.logs: list[Path] = []
        self.exit_codes: list[tuple[str, int]] = []  # (how it was stopped, exit code)

    def __len__(self) -> int:
        return len(self.slots)

    def start(self, slot: int) -> ServiceProcess:
        current = self.slots[slot]
        assert current is None or not current.alive, f"email-service #{slot} is still running"
        port = free_port()
        log = self.workdir / f"email-{slot}-{len(self.logs)}.log"
        self.logs.append(log)
        env = {**self.env, **self.slot_env.get(slot, {}), "METRICS_PORT": str(port)}
        process = email_process(env, log, name=f"email-service #{slot}")
        self.slots[slot], self.ports[slot] = process.start(), port
        return process

    def process(self, slot: int) -> ServiceProcess:
        process = self.slots[slot]
        assert process is not None, f"email-service #{slot} was never started"
        return process

    def url(self, slot: int, path: str = "/readyz") -> str:
        return f"http://127.0.0.1:{self.ports[slot]}{path}"

    def alive(self, slot: int) -> bool:
        process = self.slots[slot]
        return process is not None and process.alive

    def live(self) -> list[int]:
        return [slot for slot in range(len(self.slots)) if self.alive(slot)]

    async def ready(self, slot: int) -> bool:
        return self.alive(slot) and await http_ok(self.url(slot))

    async def wait_ready(self, slot: int, timeout: float = 30) -> None:
        await self.process(slot).wait_ready(self.url(slot), timeout)

    def kill(self, slot: int) -> None:
        self.exit_codes.append(("sigkill", self.process(slot).kill()))

    async def terminate(self, slot: int) -> int:
        process = self.process(slot)
        process.signal()
        code = await process.wait_exit(self.shutdown_timeout + 15)
        self.exit_codes.append(("sigterm", code))
        return code

    async def in_progress_of(self, slot: int) -> float:
        """Messages process `slot` is handling right now (infinite when it cannot tell)."""
        try:
            metrics = await scrape(self.url(slot, "/metrics"), timeout=2)
        except httpx.HTTPError:
            return float("inf")
        value = metrics.value("email_in_progress")
        return float("inf") if value is None else value

    async def in_progress(self) -> float:
        """Messages being handled right now, over every live process."""
        return sum([await self.in_progress_of(slot) for slot in self.live()])

    async def stop_all(self) -> None:
        """Graceful stop of every live process (SIGTERM, in parallel), recording the exit codes."""
        await asyncio.gather(*(self.terminate(slot) for slot in self.live()))

    def cleanup(self) -> None:
        stop_all([process for process in self.slots if process is not None], grace=5)
