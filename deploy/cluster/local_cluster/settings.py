"""Where the local cluster lives: its state directory, ports and node names, from the environment.

    CLUSTER_STATE_DIR        /tmp/welcome-mail-cluster   everything the cluster writes; `down` removes it
    CLUSTER_FRONT_PORT       5680    haproxy, 127.0.0.1, tcp mode, roundrobin
    CLUSTER_AMQP_BASE_PORT   5681    node i listens on base+i-1 (5681..5683)
    CLUSTER_DIST_BASE_PORT   25681   Erlang distribution, node i on base+i-1 (25681..25683)
    CLUSTER_NODE_PREFIX      rc      node names rc1@localhost..rc3@localhost
    CLUSTER_TIMEOUT          180     seconds any one command may wait before it gives up

Two clusters with different settings (state directory, ports and prefix all different) can run side by side.

A cluster can also be given `places` (code only, no variables): node i then is <prefix>i@<host> in network namespace
`netns`, listening on `address` (tests/support/partition.py builds such a network, so that one node can be cut off).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import ClusterError
from .front import FrontSpec
from .node import NodeSpec

NODE_HOST = "localhost"


@dataclass(frozen=True)
class NodePlace:
    """Where one node of the cluster runs: its host name (resolved through `ClusterSettings.inetrc`), its address
    and its network namespace."""

    host: str
    address: str
    netns: str | None = None


@dataclass(frozen=True)
class ClusterSettings:
    state_dir: Path = Path("/tmp/welcome-mail-cluster")
    front_port: int = 5680
    amqp_base_port: int = 5681
    dist_base_port: int = 25681
    node_prefix: str = "rc"
    timeout: float = 180
    size: int = 3
    places: tuple[NodePlace, ...] = ()  # one per node; () is every node on 127.0.0.1 as <prefix>i@localhost
    inetrc: Path | None = None  # the Erlang hosts file naming the places' hosts
    net_ticktime: int | None = None  # Erlang's (None: its 60 s); how soon a node notices a silent peer

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ClusterSettings:
        defaults = cls()

        def number(variable: str, default: float) -> int:
            raw = environ.get(variable, "")
            if not raw:
                return int(default)
            try:
                return int(raw)
            except ValueError:
                raise ClusterError(f"{variable} must be a whole number, got {raw!r}") from None

        return cls(state_dir=Path(environ.get("CLUSTER_STATE_DIR") or defaults.state_dir),
                   front_port=number("CLUSTER_FRONT_PORT", defaults.front_port),
                   amqp_base_port=number("CLUSTER_AMQP_BASE_PORT", defaults.amqp_base_port),
                   dist_base_port=number("CLUSTER_DIST_BASE_PORT", defaults.dist_base_port),
                   node_prefix=environ.get("CLUSTER_NODE_PREFIX") or defaults.node_prefix,
                   timeout=number("CLUSTER_TIMEOUT", defaults.timeout))

    def node_specs(self) -> tuple[NodeSpec, ...]:
        """Node 1 is the seed: the others join it at their first boot."""
        places = self.places or tuple(NodePlace(NODE_HOST, "127.0.0.1") for _ in range(self.size))
        if len(places) != self.size:
            raise ClusterError(f"{len(places)} places for {self.size} nodes")
        names = [f"{self.node_prefix}{i}@{place.host}" for i, place in enumerate(places, start=1)]
        return tuple(NodeSpec(name=name, amqp_port=self.amqp_base_port + i, dist_port=self.dist_base_port + i,
                              home=self.state_dir / name.split("@")[0], seed=names[0], address=place.address,
                              netns=place.netns, inetrc=self.inetrc, net_ticktime=self.net_ticktime)
                     for i, (name, place) in enumerate(zip(names, places, strict=True)))

    def front_spec(self) -> FrontSpec:
        return FrontSpec(port=self.front_port, home=self.state_dir,
                         servers=tuple((spec.short_name, spec.address, spec.amqp_port) for spec in self.node_specs()))
