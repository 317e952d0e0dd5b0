"""A local three-node RabbitMQ cluster behind an haproxy TCP front, for failover tests.

The cluster is deploy/cluster/cluster.sh (nodes rc1..rc3@localhost on 5681-5683, the front on 127.0.0.1:5680).
The `rabbit_cluster` fixture brings it up once per session and takes it down at the end; a cluster that was
already up (`make cluster-up`) is used as it is and left running. Nothing is skipped: without RabbitMQ,
haproxy or root the fixture fails and says what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CLUSTER_SH = Path(__file__).resolve().parents[2] / "deploy" / "cluster" / "cluster.sh"
UP_TIMEOUT_SECONDS = 240      # from nothing it takes ~15 s on 2 cores
DOWN_TIMEOUT_SECONDS = 120
COMMAND_TIMEOUT_SECONDS = 120  # kill, start (a restart and rejoin takes ~5 s), leader, nodes
_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def cluster_sh(*args: str, timeout: float = COMMAND_TIMEOUT_SECONDS, check: bool = True) -> str:
    """Run deploy/cluster/cluster.sh; fail the test with its stderr when it fails."""
    try:
        result = subprocess.run([str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, "PATH": _SBIN_PATH, "CLUSTER_TIMEOUT": str(int(timeout))})
    except subprocess.TimeoutExpired:
        pytest.fail(f"cluster.sh {' '.join(args)} did not finish within {timeout}s")
    if check and result.returncode != 0:
        pytest.fail(f"cluster.sh {' '.join(args)} failed (exit {result.returncode}):\n"
                    f"{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


@dataclass
class RabbitCluster:
    """Handle on the running cluster. Node names are full Erlang names, e.g. "rc2@localhost"."""

    url: str
    nodes: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)

    def node_url(self, node: str) -> str:
        """AMQP URL of one node directly, bypassing the front."""
        return cluster_sh("url", node).strip()

    def leader(self, queue: str, vhost: str = "/") -> str:
        """The node leading quorum queue `queue` now."""
        return cluster_sh("leader", queue, vhost).strip()

    def members(self, queue: str, vhost: str = "/") -> list[str]:
        """The online members of quorum queue `queue`."""
        return cluster_sh("members", queue, vhost).split()

    def running_nodes(self) -> list[str]:
        """The nodes the cluster itself reports as running."""
        return cluster_sh("nodes").split()

    def kill(self, node: str) -> None:
        """SIGKILL one node (no shutdown at all: its connections drop, its Raft members vanish)."""
        cluster_sh("kill", node)

    def start(self, node: str) -> None:
        """Start a killed node again; returns once it runs, has rejoined and is back in haproxy's rotation."""
        cluster_sh("start", node)

    def status(self) -> tuple[bool, str]:
        result = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PATH": _SBIN_PATH})
        return result.returncode == 0, result.stdout + result.stderr


def _require_prerequisites() -> None:
    if shutil.which("rabbitmq-server", path=_SBIN_PATH) is None:
        pytest.fail("the cluster tests need RabbitMQ's server package (they run three extra nodes from it): "
                    "apt-get install -y rabbitmq-server haproxy")
    if os.geteuid() != 0:
        pytest.fail("the cluster tests must run as root: cluster.sh runs the nodes and rabbitmqctl as the "
                    "rabbitmq user (runuser)")
    if shutil.which("haproxy", path=_SBIN_PATH) is None:
        # cluster.sh installs it when missing (apt-get, as root); say so in case that fails
        print("haproxy is missing: cluster.sh will apt-get install -y haproxy")


@pytest.fixture(scope="session")
def rabbit_cluster() -> RabbitCluster:
    if not CLUSTER_SH.is_file():
        pytest.fail(f"{CLUSTER_SH} is missing")
    _require_prerequisites()
    already_up = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, timeout=60,
                                env={**os.environ, "PATH": _SBIN_PATH}).returncode == 0
    started = time.monotonic()
    try:
        url = cluster_sh("up", timeout=UP_TIMEOUT_SECONDS).strip().splitlines()[-1]
        nodes = tuple(cluster_sh("nodes").split())
        if len(nodes) != 3:
            pytest.fail(f"expected 3 running nodes, the cluster reports {nodes}")
    except BaseException:
        if not already_up:  # a half-started cluster must not outlive the session either
            subprocess.run([str(CLUSTER_SH), "down"], capture_output=True, timeout=DOWN_TIMEOUT_SECONDS,
                           env={**os.environ, "PATH": _SBIN_PATH})
        raise
    cluster = RabbitCluster(url=url, nodes=nodes, timings={"up_seconds": time.monotonic() - started})
    try:
        yield cluster
    finally:
        if already_up:
            # someone ran `make cluster-up`: leave it as found (all nodes running again)
            cluster_sh("up", timeout=UP_TIMEOUT_SECONDS)
        else:
            started = time.monotonic()
            cluster_sh("down", timeout=DOWN_TIMEOUT_SECONDS)
            cluster.timings["down_seconds"] = time.monotonic() - started
