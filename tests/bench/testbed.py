"""The ground every section runs on: its processes, its vhosts and the main vhost's channel, a log line.

Invariant: every vhost the bench creates is named wm-bench-<tag>-* and deleted by `cleanup()`, and every process
is stopped by it; the driver calls `cleanup()` on every exit, Ctrl-C included. The main vhost holds the
email-service's topology and the peers' queues (Celery's `celery`, Dramatiq's `default`), declared once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.support.amqp import declare_topology
from tests.support.broker import VHost
from tests.support.waits import eventually_sync

from .broker import Broker, vhost_url
from .processes import Processes


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def http_status(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET; status 0 if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def wait_ready(port: int, timeout: float = 30.0, what: str = "service") -> None:
    """Until http://127.0.0.1:port/readyz answers 200."""
    eventually_sync(lambda: http_status(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout, 0.1,
                    what=f"{what} ready on :{port}")


class Testbed:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tag = uuid.uuid4().hex[:8]
        self.processes = Processes()
        self.vhosts: list[str] = []
        self.broker: Broker | None = None

    def open(self) -> Broker:
        """Create the main vhost with both topologies; return its channel (also `self.broker`)."""
        vhost = self.add_vhost("main")
        asyncio.run(declare_topology(vhost_url(vhost)))
        self.broker = Broker(vhost)
        # Celery's default queue exactly as kombu declares it: direct exchange `celery`, durable classic queue.
        self.broker.ch.exchange_declare("celery", "direct", durable=True, auto_delete=False)
        self.broker.ch.queue_declare("celery", durable=True, auto_delete=False)
        self.broker.ch.queue_bind("celery", "celery", "celery")
        from dramatiq.brokers.rabbitmq import RabbitmqBroker  # Dramatiq's queue with Dramatiq's own arguments

        peer = RabbitmqBroker(url=self.broker.url)
        peer.declare_queue("default", ensure=True)
        peer.close()
        os.environ["BENCH_AMQP_URL"] = self.broker.url  # read by the peers' modules when imported here
        return self.broker

    def add_vhost(self, suffix: str) -> str:
        name = VHost.create(prefix=f"wm-bench-{self.tag}-{suffix}").name
        self.vhosts.append(name)
        return name

    def delete_vhost(self, name: str) -> None:
        if name in self.vhosts:
            self.vhosts.remove(name)
            with contextlib.suppress(Exception):
                VHost(name).delete()

    def cleanup(self) -> None:
        self.processes.stop_all()
        if self.broker is not None:
            self.broker.close()
        for name in list(self.vhosts):
            self.delete_vhost(name)
