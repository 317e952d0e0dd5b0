"""A RabbitMQ node of a test run's own (deploy/cluster/local_cluster's Node), for faults the shared broker must never
suffer: `stop_app`/`start_app`, restarts, links cut before it.

    broker = PrivateBroker.start()        # boots wm-private-<tag>@localhost on free ports, home in /tmp
    vhost = broker.vhost()                # a VHost of it (tests/support/broker.py), deleted with the node
    broker.ctl("stop_app"); broker.ctl("start_app"); broker.ctl("await_startup")
    broker.remove()                       # stops the node and deletes its home

Invariants: the node's name, ports, home and Erlang cookie are its own (see local_cluster.node), so nothing done to
it reaches the shared broker at 5672 or the cluster nodes. Its home is under /tmp, not pytest's tmp_path: the
rabbitmq user the node runs as must be able to reach it. Without RabbitMQ or root, `start` fails saying so.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from local_cluster import ClusterError, Node, NodeSpec

from tests.support.broker import VHost
from tests.support.ports import free_port

BOOT_TIMEOUT_SECONDS = 180  # ~10 s on an idle machine, far more when every core is busy


class PrivateBrokerMissing(AssertionError):
    """The private node could not start; the message says what is missing."""


@dataclass
class PrivateBroker:
    node: Node

    @classmethod
    def start(cls, prefix: str = "wm-private") -> PrivateBroker:
        tag = uuid.uuid4().hex[:8]
        spec = NodeSpec(f"{prefix}-{tag}@localhost", amqp_port=free_port(), dist_port=free_port(),
                        home=Path(f"/tmp/{prefix}-{tag}"))
        broker = cls(Node(spec))
        try:
            broker.node.start(timeout=BOOT_TIMEOUT_SECONDS)
        except ClusterError as error:
            broker.remove()
            raise PrivateBrokerMissing(f"a private RabbitMQ node did not start (apt-get install -y rabbitmq-server; "
                                       f"run as root): {error}") from None
        return broker

    @property
    def url(self) -> str:
        return self.node.url

    @property
    def port(self) -> int:
        return self.node.spec.amqp_port

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl ARGS against this node; its stdout (a failing command raises ClusterError)."""
        return self.node.ctl(*args, timeout=timeout)

    def vhost(self, prefix: str = "wm-private") -> VHost:
        return VHost.create(prefix, broker_url=self.url, ctl=self.ctl)

    def remove(self) -> None:
        self.node.remove()
