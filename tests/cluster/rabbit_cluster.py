"""A handle on the running local RabbitMQ cluster (deploy/cluster/local_cluster) for the cluster tests.

Every call blocks (rabbitmqctl takes a second or more): async tests call it through asyncio.to_thread. A call that
fails raises local_cluster.ClusterError saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from local_cluster import Cluster

COMMAND_TIMEOUT_SECONDS = 120  # start (a restart and rejoin takes ~5-20 s)


@dataclass
class RabbitCluster:
    """Handle on the running cluster. Node names are full Erlang names, e.g. "rc2@localhost".

    Every call blocks (rabbitmqctl takes a second or more): async tests call it through asyncio.to_thread.
    A call that fails raises local_cluster.ClusterError saying why."""

    cluster: Cluster
    url: str
    nodes: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)

    def node_url(self, node: str) -> str:
        """AMQP URL of one node directly, bypassing the front."""
        return self.cluster.node(node).url

    def leader(self, queue: str, vhost: str = "/") -> str:
        """The node leading quorum queue `queue` now."""
        return self.cluster.leader(queue, vhost)

    def members(self, queue: str, vhost: str = "/") -> list[str]:
        """The online members of quorum queue `queue`."""
        return list(self.cluster.members(queue, vhost))

    def running_nodes(self) -> list[str]:
        """The nodes the cluster itself reports as running."""
        return list(self.cluster.running_nodes())

    def views(self) -> str:
        """Each running node's own list of running nodes, and the end of every node's log: what a failed check of
        the cluster's membership prints."""
        lines = []
        for node in self.cluster.nodes:
            try:
                view = " ".join(node.cluster_status().running_nodes) if node.running() else "(not running)"
            except Exception as exc:  # noqa: BLE001 - a diagnostic: say what asking it gave
                view = f"(no answer: {exc})"
            lines.append(f"{node.name} sees: {view}")
        for node in self.cluster.nodes:
            log = node.spec.log_file.read_text(errors="replace") if node.spec.log_file.exists() else ""
            lines.append(f"--- {node.name} log, last lines:\n" + "\n".join(log.splitlines()[-15:]))
        return "\n".join(lines)

    def kill(self, node: str) -> None:
        """SIGKILL one node (no shutdown at all: its connections drop, its Raft members vanish)."""
        self.cluster.kill_node(node)

    def start(self, node: str) -> None:
        """Start a killed node again; returns once it runs, has rejoined and is back in haproxy's rotation."""
        self.cluster.start_node(node, timeout=COMMAND_TIMEOUT_SECONDS)

    def ctl(self, node: str, *args: str) -> str:
        """rabbitmqctl against one node; its output."""
        return self.cluster.node(node).ctl(*args)

    def ctl_json(self, node: str, *args: str) -> Any:
        """rabbitmqctl -q ARGS --formatter json against one node, parsed."""
        return self.cluster.node(node).ctl_json(*args)

    def status(self) -> tuple[bool, str]:
        health = self.cluster.health()
        return health.healthy, "\n".join(health.lines())
