"""The ceilings: the least code that does each service's job (tests/bench/peers/ceiling_consumer.py: bare
aio-pika + a pool of aiosmtplib connections sending pre-rendered bytes; ceiling_app.py: Starlette + one confirmed
aio-pika publish). Our events are their input, as for the email-service."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..messages import our_events
from ..paths import BENCH_PY, PEERS
from .base import peer_env, start_uvicorn

if TYPE_CHECKING:
    from ..broker import Broker
    from ..testbed import Testbed


@dataclass(frozen=True)
class CeilingConsumer:
    key: str = "ceiling"
    queue: str = "email.welcome"
    pool: int = 16  # reused SMTP connections (BENCH_POOL)

    def consumers_registered(self, processes: int) -> int:
        return processes

    def publish(self, broker: Broker, n: int) -> None:
        broker.publish("signups", "user.signed_up", our_events(n))

    def start(self, bed: Testbed, processes: int, smtp_port: int) -> list[subprocess.Popen]:
        return [bed.processes.start("ceiling", [BENCH_PY, str(PEERS / "ceiling_consumer.py")],
                                    env={**peer_env(bed, smtp_port), "BENCH_QUEUE": self.queue,
                                         "BENCH_POOL": str(self.pool)})
                for _ in range(processes)]


@dataclass(frozen=True)
class CeilingApp:
    """Publishes to the `signups` exchange, or straight to `queue` (through the default exchange) if given."""
    queue: str | None = None
    key: str = "ceiling"

    def start(self, bed: Testbed) -> tuple[subprocess.Popen, int]:
        route = {} if self.queue is None else {"BENCH_EXCHANGE": "", "BENCH_ROUTING_KEY": self.queue}
        return start_uvicorn(bed, self.key, "ceiling_app:app", route)
