"""The cluster's health as `status` reports it: each node's process, the membership, the front."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeHealth:
    name: str
    pid: int | None
    amqp_port: int


@dataclass(frozen=True)
class Health:
    """Healthy: every node runs, the cluster sees them all running, the front answers with all in rotation."""

    nodes: tuple[NodeHealth, ...]
    running_nodes: tuple[str, ...]
    front_port: int
    front_pid: int | None
    front_up_servers: tuple[str, ...] | None   # None: the admin socket did not answer
    front_answers: bool

    @property
    def healthy(self) -> bool:
        size = len(self.nodes)
        return (all(node.pid is not None for node in self.nodes) and len(self.running_nodes) == size
                and self.front_pid is not None and self.front_answers
                and self.front_up_servers is not None and len(self.front_up_servers) == size)

    def lines(self) -> list[str]:
        lines = [f"{node.name:<16} pid {node.pid:<7} amqp 127.0.0.1:{node.amqp_port}" if node.pid is not None
                 else f"{node.name:<16} DOWN" for node in self.nodes]
        lines.append(f"cluster running nodes: {len(self.running_nodes)} ({' '.join(self.running_nodes)})")
        if self.front_pid is None:
            lines.append("front DOWN")
            return lines
        servers = "unknown (no admin socket)" if self.front_up_servers is None else \
            " ".join(self.front_up_servers) or "none"
        lines.append(f"front 127.0.0.1:{self.front_port} haproxy pid {self.front_pid}, servers up: {servers}")
        if not self.front_answers:
            lines.append("front does not answer AMQP")
        return lines
