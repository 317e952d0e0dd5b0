"""Celery: the typical task (tests/bench/peers/mailtask.py) in a prefork worker with acks_late, and a Starlette
endpoint that enqueues it with send_task (tests/bench/peers/celery_app.py). Messages are built by Celery's own
code (as_task_v2 + kombu's serializer) and published in bulk to the `celery` queue."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.support.processes import ServiceProcess

from ..broker import Prepared
from ..messages import signups
from ..paths import BENCH_BIN, PEERS
from .base import peer_env, peer_module, start_uvicorn

if TYPE_CHECKING:
    from ..broker import Broker
    from ..testbed import Testbed


def task_messages(n: int) -> Iterator[Prepared]:
    from kombu.serialization import dumps

    app = peer_module("celery_worker").app
    for event_id, email, name, locale in signups(n):
        msg = app.amqp.as_task_v2(event_id, "bench.send_welcome", args=[email, name, locale, event_id], kwargs={})
        content_type, encoding, body = dumps(msg.body, serializer="json")
        headers = {k: v for k, v in msg.headers.items() if v is not None}
        yield body.encode() if isinstance(body, str) else body, {
            "content_type": content_type, "content_encoding": encoding, "delivery_mode": 2, "priority": 0,
            "correlation_id": event_id, "application_headers": headers}


@dataclass(frozen=True)
class CeleryWorker:
    key: str = "celery"
    queue: str = "celery"

    def consumers_registered(self, processes: int) -> int:
        return 1  # the prefork master consumes for all its children

    def publish(self, broker: Broker, n: int) -> None:
        broker.publish("celery", "celery", task_messages(n))

    def start(self, bed: Testbed, processes: int, smtp_port: int) -> list[ServiceProcess]:
        return [bed.processes.start("celery", [
            str(BENCH_BIN / "celery"), "-A", "celery_worker", "worker", "-P", "prefork", "-c", str(processes),
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning",
            "-n", f"bench{bed.tag}@%h"], env=peer_env(bed, smtp_port), cwd=PEERS)]


@dataclass(frozen=True)
class CeleryApp:
    key: str = "celery"

    def start(self, bed: Testbed) -> tuple[ServiceProcess, int]:
        return start_uvicorn(bed, self.key, "celery_app:app", {})


@dataclass(frozen=True, kw_only=True)
class LimitedCeleryWorkers(CeleryWorker):
    """Celery for the provider-limits section (tests/bench/peers/celery_limited.py): one worker node per process,
    each with `rate_limit` = the provider's rate / the number of nodes."""
    rate: float
    failures_file: str

    def consumers_registered(self, processes: int) -> int:
        return processes  # one node each

    def start(self, bed: Testbed, processes: int, smtp_port: int) -> list[ServiceProcess]:
        env = {**peer_env(bed, smtp_port), "BENCH_RATE_LIMIT": f"{self.rate / processes:g}/s",
               "BENCH_FAILURES_FILE": self.failures_file}
        return [bed.processes.start(f"celery-{i}", [
            str(BENCH_BIN / "celery"), "-A", "celery_limited", "worker", "-P", "prefork", "-c", "1",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning",
            "-n", f"limited{i}-{bed.tag}@%h"], env=env, cwd=PEERS) for i in range(processes)]
