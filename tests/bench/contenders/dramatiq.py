"""Dramatiq: the typical task (tests/bench/peers/mailtask.py) as an actor, 8 threads per worker process
(tests/bench/peers/dramatiq_worker.py); messages built with dramatiq.Message, published to its `default` queue."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.support.processes import ServiceProcess

from ..broker import Prepared
from ..messages import signups
from ..paths import BENCH_BIN, PEERS
from .base import peer_env

if TYPE_CHECKING:
    from ..broker import Broker
    from ..testbed import Testbed


def actor_messages(n: int) -> Iterator[Prepared]:
    import dramatiq

    for event_id, email, name, locale in signups(n):
        message = dramatiq.Message(queue_name="default", actor_name="send_welcome",
                                   args=(email, name, locale, event_id), kwargs={}, options={})
        yield message.encode(), {"delivery_mode": 2}


@dataclass(frozen=True)
class DramatiqWorker:
    key: str = "dramatiq"
    queue: str = "default"

    def consumers_registered(self, processes: int) -> int:
        return processes

    def publish(self, broker: Broker, n: int) -> None:
        broker.publish("", "default", actor_messages(n))

    def start(self, bed: Testbed, processes: int, smtp_port: int) -> list[ServiceProcess]:
        return [bed.processes.start("dramatiq", [str(BENCH_BIN / "dramatiq"), "dramatiq_worker", "-p", str(processes)],
                                    env=peer_env(bed, smtp_port), cwd=PEERS)]


@dataclass(frozen=True, kw_only=True)
class LimitedDramatiqWorker(DramatiqWorker):
    """Dramatiq for the provider-limits section (tests/bench/peers/dramatiq_limited.py): its Redis rate limiters
    set to the provider's rate and connection cap, shared by every process."""
    redis_url: str
    rate: float
    connections: int
    limiter_prefix: str

    def start(self, bed: Testbed, processes: int, smtp_port: int) -> list[ServiceProcess]:
        env = {**peer_env(bed, smtp_port), "BENCH_REDIS_URL": self.redis_url, "BENCH_RATE": str(self.rate),
               "BENCH_CONNECTIONS": str(self.connections), "BENCH_LIMITER_PREFIX": self.limiter_prefix}
        return [bed.processes.start("dramatiq", [str(BENCH_BIN / "dramatiq"), "dramatiq_limited", "-p",
                                                 str(processes)], env=env, cwd=PEERS)]
