"""The processes of a reliability scenario: service processes that die with the test run, a private Redis, and the
fleet of email-service processes the chaos kills, stops and starts again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually, free_port
from tests.support.services import VENV_BIN, ServiceProcess

SHUTDOWN_TIMEOUT_SECONDS = 10
_IN_PROGRESS = re.compile(r"^email_in_progress (\S+)$", re.MULTILINE)


# util-linux: the child gets SIGKILL when the test runner dies, so no consumer outlives a killed run
_DIE_WITH_US = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


class ChildProcess(ServiceProcess):
    """A service process in its own process group (ServiceProcess) that also dies with the test runner."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__([*_DIE_WITH_US, *argv], env, log_path)


def email_process(env: dict[str, str], log_path: Path) -> ChildProcess:
    return ChildProcess([str(VENV_BIN / "email-service"), "run"], env, log_path)


def producer_process(env: dict[str, str], log_path: Path) -> ChildProcess:
    return ChildProcess([str(VENV_BIN / "producer-service")], env, log_path)


def kill_group(process: ServiceProcess, signum: int = signal.SIGKILL) -> None:
    if process.proc is not None and process.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.proc.pid, signum)


async def wait_exit(process: ServiceProcess, timeout: float, what: str) -> int:
    assert process.proc is not None
    await eventually(lambda: process.proc.poll() is not None, timeout=timeout, interval=0.05, what=what)
    return process.proc.returncode


def stop_process(process: ServiceProcess, grace: float = 15) -> int | None:
    """SIGTERM, then SIGKILL to the whole group if it does not exit in time. Returns the exit code."""
    if process.proc is None:
        return None
    if process.proc.poll() is None:
        process.signal(signal.SIGTERM)
        try:
            process.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    kill_group(process)  # also anything the process started
    code = process.proc.wait()
    with contextlib.suppress(Exception):
        process._log.close()
    return code


async def http_ok(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


class PrivateRedis:
    """A redis-server of this test only (loopback, no persistence): dedup state no other run can see or touch."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = ChildProcess(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)], {}, workdir / "redis.log")

    async def start(self) -> PrivateRedis:
        import redis.asyncio as redis

        if shutil.which("redis-server") is None:
            pytest.fail("the dedup scenarios start a private redis-server: apt-get install -y redis-server")
        self.process.start()

        async def answers() -> bool:
            client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
            try:
                return bool(await client.ping())
            except (OSError, redis.RedisError):
                return False
            finally:
                await client.aclose()

        await eventually(answers, timeout=15, interval=0.05, what="the private redis-server")
        return self

    def stop(self) -> None:
        stop_process(self.process, grace=5)


class ConsumerFleet:
    """N email-service processes; each slot can be SIGKILLed, SIGTERMed and started again (a new log file each time)."""

    def __init__(self, env: dict[str, str], size: int, workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.slots: list[ServiceProcess | None] = [None] * size
        self.ports: list[int] = [0] * size
        self.logs: list[Path] = []
        self.exit_codes: list[tuple[str, int]] = []  # (how it was stopped, exit code)

    def start(self, slot: int) -> ServiceProcess:
        assert self.slots[slot] is None or self.slots[slot].proc.poll() is not None
        port = free_port()
        log = self.workdir / f"email-{slot}-{len(self.logs)}.log"
        self.logs.append(log)
        process = email_process({**self.env, "METRICS_PORT": str(port)}, log).start()
        self.slots[slot], self.ports[slot] = process, port
        return process

    def alive(self, slot: int) -> bool:
        process = self.slots[slot]
        return process is not None and process.proc.poll() is None

    async def ready(self, slot: int) -> bool:
        return self.alive(slot) and await http_ok(f"http://127.0.0.1:{self.ports[slot]}/readyz")

    async def wait_ready(self, slot: int, timeout: float = 30) -> None:
        await eventually(lambda: self.ready(slot), timeout=timeout, interval=0.1,
                         what=f"email-service #{slot} ready ({self.logs[-1]})")

    def kill(self, slot: int) -> None:
        process = self.slots[slot]
        assert process is not None
        kill_group(process)
        self.exit_codes.append(("sigkill", process.proc.wait()))

    async def terminate(self, slot: int) -> int:
        process = self.slots[slot]
        assert process is not None
        process.signal(signal.SIGTERM)
        code = await wait_exit(process, SHUTDOWN_TIMEOUT_SECONDS + 15, f"email-service #{slot} to exit after SIGTERM")
        self.exit_codes.append(("sigterm", code))
        return code

    async def in_progress_of(self, slot: int) -> float:
        """Messages process `slot` is handling right now (infinite when it cannot tell)."""
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                text = (await client.get(f"http://127.0.0.1:{self.ports[slot]}/metrics")).text
        except httpx.HTTPError:
            return float("inf")
        match = _IN_PROGRESS.search(text)
        return float(match.group(1)) if match else float("inf")

    async def in_progress(self) -> float:
        """Messages being handled right now, over every live process."""
        return sum([await self.in_progress_of(slot) for slot in range(len(self.slots)) if self.alive(slot)])

    async def stop_all(self) -> None:
        """Graceful stop of every live process (SIGTERM, in parallel)."""
        live = [slot for slot in range(len(self.slots)) if self.alive(slot)]
        await asyncio.gather(*(self.terminate(slot) for slot in live))

    def cleanup(self) -> None:
        for process in self.slots:
            if process is not None:
                stop_process(process, grace=5)
