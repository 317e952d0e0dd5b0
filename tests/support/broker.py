"""The shared RabbitMQ as the suites administer it: rabbitmqctl, and a vhost of one's own per test or module.

Invariant: a test run touches nothing outside the vhosts it created, and deletes each of them (with every queue
and connection in it) when done. Without rabbitmqctl or a broker the tests fail saying what to start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable
from urllib.parse import quote, urlsplit

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
_BROKER = urlsplit(AMQP_URL)
START_IT = "start it with `rabbitmq-server -detached` (or `make broker`)"


class BrokerMissing(AssertionError):
    """RabbitMQ or its tools are not there; the message says what to install or start."""


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    if shutil.which("rabbitmqctl") is None:
        raise BrokerMissing("rabbitmqctl is not on PATH: install RabbitMQ (apt-get install rabbitmq-server) and "
                            + START_IT)
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: "
                             f"{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def check_broker() -> None:
    host, port = _BROKER.hostname or "localhost", _BROKER.port or 5672
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError:
        raise BrokerMissing(f"RabbitMQ does not answer at {host}:{port}: {START_IT}") from None


Ctl = Callable[..., str]  # rabbitmqctl ARGS against one broker; its stdout


class VHost:
    """A vhost that belongs to one test (or one module): of the shared broker, or of the broker at `broker_url`
    administered by `ctl` (a private node: tests/support/private_broker.py)."""

    def __init__(self, name: str, broker_url: str = AMQP_URL, ctl: Ctl = rabbitmqctl) -> None:
        broker = urlsplit(broker_url)
        self.name = name
        self.url = f"{broker.scheme}://{broker.netloc}/{quote(name, safe='')}"
        self.user = broker.username or "guest"
        self.ctl = ctl

    @classmethod
    def create(cls, prefix: str = "wm-test", broker_url: str = AMQP_URL, ctl: Ctl = rabbitmqctl) -> VHost:
        vhost = cls(f"{prefix}-{uuid.uuid4().hex[:10]}", broker_url, ctl)
        vhost.ctl("add_vhost", vhost.name)
        vhost.ctl("set_permissions", "-p", vhost.name, vhost.user, ".*", ".*", ".*")
        return vhost

    def delete(self) -> None:
        self.ctl("delete_vhost", self.name)

    def close_connections(self, reason: str = "test closes connections") -> None:
        self.ctl("close_all_connections", "--vhost", self.name, reason)

    def prefetch_counts(self, queue: str) -> list[int]:
        """The prefetch of every consumer of `queue`, as the broker sees it (what it may hand each unacked)."""
        out = self.ctl("list_consumers", "--quiet", "--no-table-headers", "--vhost", self.name,
                       "queue_name", "prefetch_count")
        return sorted(int(count) for name, count in (line.split("\t") for line in out.splitlines() if line.strip())
                      if name == queue)
