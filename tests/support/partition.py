"""Network partitions of a local RabbitMQ cluster: every node in a network namespace of its own, so that one node
can be cut off from the other two and from every client (its epmd, its Erlang distribution, its AMQP port), then
healed.

    cluster = PartitionedCluster.up()   # 3 nodes wm<tag>-1..3, each in netns wm-<tag>-n<i> at 198.18.N.i, on a
                                        # bridge with the machine at 198.18.N.254; haproxy front on 127.0.0.1
    vhost = cluster.vhost()             # a VHost (tests/support/broker.py) reached through the front
    cluster.cut(node); cluster.heal(node)
    cluster.down()                      # nodes, front, namespaces, bridge, state directory: all gone

Invariants:
- Nothing outside the run's own tag is touched: the namespaces, the bridge and the veth pairs are created for it
  and removed with it; the addresses come from 198.18.0.0/15 (RFC 2544, for tests), in a /24 no interface of the
  machine uses. The shared broker, its epmd and the cluster of tests/cluster are never reached.
- A cut is the machine's end of the node's veth pair going down: packets in and out are dropped, nobody gets a
  reset; connections opened before it stay open and silent, as with a failed switch port. Because every node runs
  its own epmd in its own namespace, the cut takes epmd, the distribution ports and AMQP at once.
- While a node is cut nothing asks it anything (rabbitmqctl would hang until its timeout): `ctl` and the queue
  states go to the nodes that are not cut.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from local_cluster import Cluster, ClusterError, ClusterSettings, Node, NodePlace
from local_cluster.ctl_json import QueueState, parse

from tests.support.broker import VHost
from tests.support.ports import free_port

TEST_NET = ipaddress.ip_network("198.18.0.0/15")
UP_TIMEOUT_SECONDS = 240  # three nodes from nothing: ~20-30 s on 2 idle cores, far more when they are busy
DOWN_TIMEOUT_SECONDS = 120
QUERY_TIMEOUT_SECONDS = 20  # one rabbitmqctl query (~1-3 s; a node that has not yet noticed a cut waits longer)
NET_TICKTIME_SECONDS = 10  # Erlang's default is 60 s: a 30 s partition would end before any node noticed it


class PartitionUnavailable(AssertionError):
    """Namespaces or veth pairs could not be made; the message says what is missing."""


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise PartitionUnavailable(f"ip {' '.join(args)} failed: {result.stderr.strip()} (the partition tests need "
                                   "root, iproute2 and a kernel with network namespaces, veth and bridge)")
    return result.stdout


def _networks_in_use() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_interface(line.split()[3]).network for line in ip("-4", "-o", "addr", "show").splitlines()]


@dataclass
class NodeNetwork:
    """A bridge in the machine's namespace and, per node, a namespace joined to it by a veth pair."""

    tag: str
    subnet: ipaddress.IPv4Network
    size: int
    made: list[tuple[str, str]] = field(default_factory=list)  # ("netns" | "link", name), for `remove`

    @classmethod
    def create(cls, size: int, tag: str) -> NodeNetwork:
        used = _networks_in_use()
        subnet = next(net for net in TEST_NET.subnets(new_prefix=24) if not any(net.overlaps(u) for u in used))
        network = cls(tag, subnet, size)
        try:
            network._build()
        except BaseException:
            network.remove()
            raise
        return network

    @property
    def bridge(self) -> str:
        return f"wm{self.tag}b"

    def netns(self, i: int) -> str:
        return f"wm-{self.tag}-n{i}"

    def host(self, i: int) -> str:
        return f"wm{self.tag}h{i}"

    def address(self, i: int) -> str:
        return str(self.subnet[i])

    def outer_link(self, i: int) -> str:
        return f"wm{self.tag}r{i}"

    def places(self) -> tuple[NodePlace, ...]:
        return tuple(NodePlace(self.host(i), self.address(i), self.netns(i)) for i in range(1, self.size + 1))

    @property
    def machine_address(self) -> str:
        """The machine's address on the bridge (haproxy reaches the nodes from it)."""
        return str(self.subnet[254])

    def inetrc(self) -> str:
        """ERL_INETRC: every node's host name -> its address; anything else through the system resolver."""
        hosts = [f'{{host, {{{self.address(i).replace(".", ",")}}}, ["{self.host(i)}"]}}.'
                 for i in range(1, self.size + 1)]
        return "\n".join([*hosts, "{lookup, [file, native]}.", ""])

    def _build(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        ip("addr", "add", f"{self.machine_address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i in range(1, self.size + 1):
            netns, outer, inner = self.netns(i), self.outer_link(i), f"wm{self.tag}n{i}"
            ip("netns", "add", netns)
            self.made.append(("netns", netns))
            ip("-n", netns, "link", "set", "lo", "up")
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            self.made.append(("link", outer))
            ip("link", "set", inner, "netns", netns)
            ip("link", "set", outer, "master", self.bridge)
            ip("link", "set", outer, "up")
            ip("-n", netns, "addr", "add", f"{self.address(i)}/24", "dev", inner)
            ip("-n", netns, "link", "set", inner, "up")

    def cut(self, i: int) -> None:
        ip("link", "set", self.outer_link(i), "down")

    def heal(self, i: int) -> None:
        ip("link", "set", self.outer_link(i), "up")

    def remove(self) -> None:
        """Kill what is left in the namespaces (the epmd each node started), then delete them and the links."""
        for kind, name in reversed(self.made):
            with contextlib.suppress(PartitionUnavailable):
                if kind == "netns":
                    for pid in ip("netns", "pids", name).split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                    ip("netns", "del", name)
                else:  # a veth goes with its namespace's end; the bridge is deleted last
                    with contextlib.suppress(PartitionUnavailable):
                        ip("link", "del", name)
        self.made.clear()


class PartitionedCluster:
    """A three-node cluster on a NodeNetwork, behind an haproxy front on loopback; see the module docstring."""

    def __init__(self, network: NodeNetwork, cluster: Cluster) -> None:
        self.network = network
        self.cluster = cluster
        self.cut_off: set[str] = set()

    @classmethod
    def up(cls, size: int = 3) -> PartitionedCluster:
        tag = uuid.uuid4().hex[:6]
        network = NodeNetwork.create(size, tag)
        state_dir = Path(f"/tmp/wm-partition-{tag}")
        inetrc = Path(f"/tmp/wm-partition-{tag}.inetrc")  # outside the state directory: `down` removes that
        inetrc.write_text(network.inetrc())
        settings = ClusterSettings(state_dir=state_dir, front_port=free_port(), amqp_base_port=5672,
                                   dist_base_port=25672, node_prefix=f"wm{tag}-", size=size,
                                   places=network.places(), inetrc=inetrc, net_ticktime=NET_TICKTIME_SECONDS)
        handle = cls(network, Cluster(settings))
        try:
            handle.cluster.up(timeout=UP_TIMEOUT_SECONDS)
        except BaseException:
            handle.down()
            raise
        return handle

    def down(self) -> None:
        for name in list(self.cut_off):
            self.heal(name)
        try:
            self.cluster.down(timeout=DOWN_TIMEOUT_SECONDS)
        finally:
            self.network.remove()
            self.cluster.settings.inetrc.unlink(missing_ok=True)  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.cluster.nodes)

    def _index(self, name: str) -> int:
        return self.names.index(self.cluster.node(name).name) + 1

    def cut(self, name: str) -> None:
        self.network.cut(self._index(name))
        self.cut_off.add(self.cluster.node(name).name)

    def heal(self, name: str) -> None:
        self.network.heal(self._index(name))
        self.cut_off.discard(self.cluster.node(name).name)

    def reachable(self) -> list[Node]:
        return [node for node in self.cluster.nodes if node.name not in self.cut_off]

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl ARGS against the first node that is not cut off and answers."""
        errors = []
        for node in self.reachable():
            try:
                return node.ctl(*args, timeout=timeout)
            except ClusterError as error:
                errors.append(str(error))
        raise ClusterError("no reachable node answered: " + " | ".join(errors))

    def vhost(self, prefix: str = "wm-partition") -> VHost:
        return VHost.create(prefix, broker_url=self.url, ctl=self.ctl)

    def running_nodes(self, timeout: float = QUERY_TIMEOUT_SECONDS) -> tuple[str, ...]:
        """The running nodes as the first reachable node sees them (its own view: no call to its peers, which
        would wait for a cut node)."""
        out = self.ctl("eval", "rabbit_nodes:all_running().", timeout=timeout)
        return tuple(sorted(name.strip(" '[]\n") for name in out.split(",") if "@" in name))

    def leader(self, vhost: str, queue: str, timeout: float = QUERY_TIMEOUT_SECONDS) -> str | None:
        """The leader of quorum queue `queue` as the first reachable node's own queue record has it (no call to
        its peers); None when it has no such queue."""
        resource = f'rabbit_misc:r(<<"{vhost}">>, queue, <<"{queue}">>)'
        out = self.ctl("eval", f"case rabbit_amqqueue:lookup({resource}) of {{ok, Q}} -> "
                               "element(2, amqqueue:get_pid(Q)); _ -> none end.", timeout=timeout)
        leader = out.strip().strip("'")
        return leader if "@" in leader else None

    def connections(self, vhost: str) -> dict[str, list[str]]:
        """node -> the connection names ("producer-service", "email-service") of `vhost`'s clients on it."""
        ports = {node.spec.amqp_port: node.name for node in self.cluster.nodes}
        out = self.ctl("-q", "list_connections", "vhost", "port", "client_properties", "--formatter", "json",
                       timeout=QUERY_TIMEOUT_SECONDS)
        found: dict[str, list[str]] = {}
        for row in parse(out, "list_connections"):
            if isinstance(row, dict) and row.get("vhost") == vhost:
                props = {item[0]: item[2] for item in row.get("client_properties") or []}
                found.setdefault(ports.get(row["port"], str(row["port"])), []).append(
                    str(props.get("connection_name", "?")))
        return found

    def log_of(self, name: str) -> str:
        """The node's RabbitMQ log so far (to see what it did while nobody could ask it)."""
        path = self.cluster.node(name).spec.log_file
        return path.read_text(errors="replace") if path.exists() else ""

    def quorum_queues(self, vhost: str,
                      timeout: float = QUERY_TIMEOUT_SECONDS) -> dict[str, tuple[str | None, tuple[str, ...]]]:
        """Every quorum queue of `vhost`: (its leader or None, its online members), as a reachable node sees it.
        (Until the majority has noticed a cut, list_queues waits for the cut node's rows: it times out.)"""
        out = self.ctl("-q", "list_queues", "-p", vhost, "name", "type", "leader", "online", "--formatter", "json",
                       timeout=timeout)
        states = {}
        for row in parse(out, "list_queues"):
            if isinstance(row, dict) and row.get("type") == "quorum":
                state = QueueState.from_row(row)
                states[state.name] = (state.leader, state.online)
        return states
