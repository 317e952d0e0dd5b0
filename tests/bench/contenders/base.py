"""What a section needs from a contender, whatever it is built with.

A `Consumer` knows its work queue, how to fill it with n signups in its own message format, how many AMQP
consumers its worker processes register (the drain is timed from the moment all are there), and how to start
them against an SMTP port. An `App` starts one HTTP server that takes POST /v1/signups and returns its port
once it answers. Both start their processes through the testbed, so the driver's clean-up stops them.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.support.waits import WaitTimedOut, eventually_sync

from ..load import post_signup
from ..paths import BENCH_BIN, PEERS

if TYPE_CHECKING:
    from ..broker import Broker
    from ..testbed import Testbed


class Consumer(Protocol):
    key: str  # as in the results: ours-info, ours-warning, celery, dramatiq, ceiling
    queue: str

    def consumers_registered(self, processes: int) -> int: ...

    def publish(self, broker: Broker, n: int) -> None: ...

    def start(self, bed: Testbed, processes: int, smtp_port: int) -> list[ServiceProcess]: ...


class App(Protocol):
    key: str  # ours, ceiling, celery

    def start(self, bed: Testbed) -> tuple[ServiceProcess, int]: ...


def fill(consumer: Consumer, broker: Broker, n: int) -> None:
    """Exactly n signups waiting in the consumer's queue."""
    broker.purge(consumer.queue)
    consumer.publish(broker, n)
    broker.wait_depth(consumer.queue, n)


def peer_env(bed: Testbed, smtp_port: int) -> dict[str, str]:
    """What the programs in tests/bench/peers read: the main vhost, the SMTP port, their own directory."""
    assert bed.broker is not None, "testbed not opened"
    return {"BENCH_AMQP_URL": bed.broker.url, "BENCH_SMTP_PORT": str(smtp_port), "PYTHONPATH": str(PEERS),
            "PYTHONDONTWRITEBYTECODE": "1"}


def peer_module(name: str) -> ModuleType:
    """A module of tests/bench/peers imported into the driver (to build the peers' messages with their own code)."""
    if str(PEERS) not in sys.path:
        sys.path.insert(0, str(PEERS))
    return importlib.import_module(name)


def until_up(bed: Testbed, proc: ServiceProcess, check, what: str, timeout: float = 30.0) -> None:
    """Wait for `check()`; on time-out fail with the end of the process's output."""
    try:
        eventually_sync(check, timeout, 0.1, what=what)
    except WaitTimedOut as exc:
        raise RuntimeError(f"{exc}; output: {bed.processes.tail(proc)}") from None


def start_uvicorn(bed: Testbed, key: str, module: str, env: dict[str, str]) -> tuple[ServiceProcess, int]:
    """A peer Starlette app in tests/bench/peers under uvicorn (uvloop, httptools, one worker, no access log)."""
    port = free_port()
    proc = bed.processes.start(f"app-{key}", [
        str(BENCH_BIN / "uvicorn"), module, "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
        "--http", "httptools", "--no-access-log", "--log-level", "warning", "--workers", "1"],
        env={**peer_env(bed, 25), **env}, cwd=PEERS)
    until_up(bed, proc, lambda: post_signup(port) == 202, f"{key} app accepting signups on :{port}")
    return proc, port
