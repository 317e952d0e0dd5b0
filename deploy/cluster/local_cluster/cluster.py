"""The local cluster: three nodes (rc1..rc3@localhost by default) and the haproxy front before them.

Invariants:
- All state lives in `settings.state_dir`: the shared Erlang cookie, one home per node, the front's files. `down`
  stops every process found through its pid file there and removes the directory; nothing else is touched (the
  machine's own broker, rabbit@localhost, has another name, ports and cookie).
- Node 1 is the seed. From nothing, it boots alone; the others then boot in parallel and, being blank, join it by
  themselves (classic_config peer discovery names it); `join_cluster` is the fallback. Nodes with data (killed or
  stopped) are started in parallel: a restarted node waits for its peers and rejoins from disk.
- `up`, `down`, `start_node` and `kill_node` take the machine-wide lock (see `lock`); the queries do not.
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

from . import epmd
from .ctl_json import QueueState, find_queue
from .errors import ClusterError
from .front import Front
from .health import Health, NodeHealth
from .lock import exclusive
from .node import Node, new_cookie
from .probe import amqp_answers
from .settings import ClusterSettings
from .waiting import Deadline, wait_until

log = logging.getLogger(__name__)


def in_parallel(action: Callable[[Node], None], nodes: Iterable[Node]) -> None:
    """Run `action` on every node at once; the first failure is raised once all have finished."""
    nodes = list(nodes)
    if not nodes:
        return
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        for future in [pool.submit(action, node) for node in nodes]:
            future.result()


class Cluster:
    """A handle on the cluster; any handle (this process or another) finds the running cluster again."""

    def __init__(self, settings: ClusterSettings | None = None) -> None:
        self.settings = settings or ClusterSettings()
        self.cookie_file = self.settings.state_dir / ".erlang.cookie"
        self.nodes = tuple(Node(spec, cookie_file=self.cookie_file) for spec in self.settings.node_specs())
        self.front = Front(self.settings.front_spec())

    @classmethod
    def from_env(cls) -> Cluster:
        return cls(ClusterSettings.from_env())

    @property
    def url(self) -> str:
        """The front's AMQP URL: what the services use."""
        return self.front.spec.url

    def node(self, name: str) -> Node:
        """A node by its full name, its short name or its number: "rc2@localhost", "rc2", "2"."""
        for number, node in enumerate(self.nodes, start=1):
            if name in (node.name, node.spec.short_name, str(number)):
                return node
        raise ClusterError(f"unknown node {name!r} (expected one of: {' '.join(n.name for n in self.nodes)})")

    def running(self) -> list[Node]:
        return [node for node in self.nodes if node.running()]

    # --- changing the cluster --------------------------------------------------------------------------------

    def up(self, timeout: float | None = None) -> str:
        """Start (or complete) the cluster and the front; returns the front's URL once all nodes serve through it."""
        deadline = Deadline(timeout or self.settings.timeout)
        with exclusive(deadline):
            self._prepare()
            missing = [node for node in self.nodes if not node.running()]
            for node in missing:     # every port needed must be free before anything starts
                node.check_free()
            seed, rest = self.nodes[0], missing
            if seed in missing and seed.blank():
                seed.start(deadline.left(at_least=1))
                rest = missing[1:]
            for node in rest:
                node.spawn()
            in_parallel(lambda node: node.wait_booted(deadline), rest)
            if missing:
                log.info("nodes booted")
            status = seed.cluster_status()
            strangers = [node for node in self.nodes[1:] if node.name not in status.disk_nodes]
            for node in strangers:
                self._join(node, seed)
            everyone = {node.name for node in self.nodes}
            if strangers or set(status.running_nodes) != everyone:
                wait_until(lambda: set(seed.cluster_status().running_nodes) == everyone, deadline,
                           f"the cluster reporting {len(everyone)} running nodes")
            self.front.start()
            self.front.wait_serving({node.spec.short_name for node in self.nodes}, deadline)
            if missing:
                log.info("up: %s behind %s", " ".join(sorted(everyone)), self.url.replace("guest:guest@", ""))
        return self.url

    def down(self, timeout: float | None = None) -> None:
        """Stop the front and every node, stop an epmd the cluster started, remove the state directory."""
        deadline = Deadline(timeout or self.settings.timeout)
        with exclusive(deadline):
            self.front.stop()
            running = self.running()
            if running:
                log.info("stopping %d node(s): pids %s", len(running), " ".join(str(n.pid()) for n in running))
            in_parallel(lambda node: node.stop(), running)
            left = self.running()
            if left:
                raise ClusterError(f"nodes still running after stop: {' '.join(n.name for n in left)}")
            epmd.stop_if_started_here(self.settings.state_dir / "epmd-started-here")
            shutil.rmtree(self.settings.state_dir, ignore_errors=True)
            log.info("down")

    def start_node(self, name: str, timeout: float | None = None) -> None:
        """Start a stopped or killed node again; returns once it runs, every running node (it included) sees the
        same running set, and (when the front runs) haproxy has it back in rotation."""
        node = self.node(name)
        deadline = Deadline(timeout or self.settings.timeout)
        if not self.settings.state_dir.is_dir():
            raise ClusterError("the cluster is not up (cluster.sh up)")
        with exclusive(deadline):
            self._prepare()
            node.start(deadline.left(at_least=1))
            running = self.running()
            names = {other.name for other in running}
            # every running node, not only the restarted one: a peer's view can lag by a second under load, and a
            # caller asking "who runs?" may ask any of them
            wait_until(lambda: all(set(other.cluster_status().running_nodes) == names for other in running),
                       deadline, f"{node.name} rejoining the cluster (running: {' '.join(sorted(names))})")
            if self.front.running():
                self.front.wait_serving({node.spec.short_name}, deadline)
            log.info("%s is back: %s", node.name, " ".join(sorted(names)))

    def kill_node(self, name: str) -> None:
        """SIGKILL one node; returns once its VM is gone."""
        node = self.node(name)
        with exclusive(Deadline(self.settings.timeout)):
            node.kill()

    # --- asking the cluster -----------------------------------------------------------------------------------

    def running_nodes(self) -> tuple[str, ...]:
        """The nodes the cluster itself reports as running (asked of the first node that runs)."""
        for node in self.running():
            return node.cluster_status().running_nodes
        raise ClusterError("no node is running")

    def queue(self, queue: str, vhost: str = "/") -> QueueState:
        """The queue's leader and online members, from the first running node that knows the queue."""
        errors = []
        for node in self.running():
            try:
                out = node.ctl("-q", "list_queues", "-p", vhost, "name", "leader", "online", "--formatter", "json")
            except ClusterError as error:
                errors.append(str(error))
                continue
            state = find_queue(out, queue)
            if state is not None:
                return state
        raise ClusterError(f"no queue {queue!r} in vhost {vhost!r}" + (f" ({errors[-1]})" if errors else ""))

    def leader(self, queue: str, vhost: str = "/") -> str:
        leader = self.queue(queue, vhost).leader
        if leader is None:   # a classic queue, or a quorum queue without a quorum
            raise ClusterError(f"no leader known for queue {queue!r} in vhost {vhost!r} "
                               "(no such quorum queue, or no quorum)")
        return leader

    def members(self, queue: str, vhost: str = "/") -> tuple[str, ...]:
        """The online members of a quorum queue."""
        return self.queue(queue, vhost).online

    def health(self) -> Health:
        nodes = tuple(NodeHealth(node.name, node.pid(), node.spec.amqp_port) for node in self.nodes)
        running: tuple[str, ...] = ()
        for node in self.running():
            try:
                running = node.cluster_status().running_nodes
                break
            except ClusterError:
                continue
        front_pid = self.front.pid()
        return Health(nodes=nodes, running_nodes=running, front_port=self.front.spec.port, front_pid=front_pid,
                      front_up_servers=self.front.up_servers() if front_pid else None,
                      front_answers=bool(front_pid) and amqp_answers(self.front.spec.port))

    # --- files ------------------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """The state directory and the shared cookie (kept once written: the nodes must all have the same one)."""
        state_dir = self.settings.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        state_dir.chmod(0o750)
        if not self.cookie_file.exists():
            self.cookie_file.write_text(new_cookie())
            self.cookie_file.chmod(0o400)
        owner = self.nodes[0].rabbit.owner()
        if owner is not None:
            os.chown(state_dir, *owner)
        epmd.note_if_absent(state_dir / "epmd-started-here")

    def _join(self, node: Node, seed: Node) -> None:
        log.info("joining %s to %s", node.name, seed.name)
        node.ctl("stop_app")
        node.ctl("join_cluster", seed.name)
        node.ctl("start_app")
