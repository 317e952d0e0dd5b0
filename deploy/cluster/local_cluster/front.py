"""The front: one haproxy in TCP mode on 127.0.0.1, round-robin over the cluster's AMQP ports.

The services get one URL for the whole cluster, as they would from a Kubernetes Service. haproxy checks each node
every 500 ms: a dead node leaves rotation after two failed checks (~1 s), its open connections are shut at once,
and a connect that fails before that is retried on another node. haproxy runs in the foreground of its own session
(`-db`), remembered by a pid file like the nodes; its admin socket tells which servers are UP (read here directly,
no socat).
"""

from __future__ import annotations

import csv
import logging
import os
import pwd
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ClusterError
from .probe import amqp_answers, port_open
from .process import Daemon
from .rabbitmq import find_program
from .waiting import Deadline, wait_until

log = logging.getLogger(__name__)
BACKEND = "rabbitmq_nodes"
STOP_GRACE_SECONDS = 10


@dataclass(frozen=True)
class FrontSpec:
    """The front's port, its servers (name, address, AMQP port) and the directory holding its files."""

    port: int
    servers: tuple[tuple[str, str, int], ...]
    home: Path

    @property
    def config_file(self) -> Path:
        return self.home / "haproxy.cfg"

    @property
    def admin_socket(self) -> Path:
        return self.home / "haproxy.sock"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"


def render_haproxy_cfg(spec: FrontSpec, run_as: str | None) -> str:
    """haproxy.cfg for the front; `run_as`: the user haproxy drops to after binding (None: stay as is)."""
    user = [f"    user {run_as}", f"    group {run_as}"] if run_as else []
    servers = [f"    server {name} {address}:{port} check" for name, address, port in spec.servers]
    return "\n".join([
        "# written by local_cluster: TCP front for the local RabbitMQ cluster",
        "global",
        "    maxconn 4096",
        f"    stats socket {spec.admin_socket} mode 600 level admin",
        *user,
        "",
        "defaults",
        "    mode tcp",
        "    option tcpka",
        "    # a connect failure (node just died, not yet marked down) is retried on another node",
        "    option redispatch 1",
        "    retries 3",
        "    timeout connect 2s",
        "    # AMQP connections are long-lived; heartbeats (60 s by default) keep them under this",
        "    timeout client 3h",
        "    timeout server 3h",
        "    timeout client-fin 10s",
        "    timeout server-fin 10s",
        "",
        "frontend amqp",
        f"    bind 127.0.0.1:{spec.port}",
        f"    default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        "    balance roundrobin",
        "    # plain TCP checks every 500 ms: a dead node leaves rotation after 2 failures (~1 s),",
        "    # returns after 2 successes; connections to a node marked down are closed at once",
        "    default-server inter 500ms fastinter 250ms downinter 1s fall 2 rise 2 on-marked-down shutdown-sessions",
        *servers,
    ]) + "\n"


def up_servers(stat_csv: str, backend: str = BACKEND) -> tuple[str, ...]:
    """The servers of `backend` that haproxy's `show stat` CSV reports UP (status "UP", "UP 1/2", ...)."""
    lines = stat_csv.lstrip("# ").splitlines()
    rows = csv.DictReader(line for line in lines if line.strip())
    return tuple(sorted(row["svname"] for row in rows
                        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND")
                        and (row.get("status") or "").startswith("UP")))


def haproxy_program() -> str:
    """haproxy's path; installed with apt-get when missing and we are root."""
    program = find_program("haproxy")
    if program is not None:
        return program
    if os.geteuid() != 0:
        raise ClusterError("haproxy is not installed: apt-get install -y haproxy")
    log.info("haproxy is missing: apt-get install -y haproxy (waits for a running apt)")
    result = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q", "haproxy"],
                            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    program = find_program("haproxy")
    if result.returncode != 0 or program is None:
        raise ClusterError("could not install haproxy: apt-get install -y haproxy")
    return program


class Front:
    """The running (or not) haproxy of one cluster."""

    def __init__(self, spec: FrontSpec) -> None:
        self.spec = spec
        self._daemon = Daemon(spec.home / "haproxy.pid", marker=("-f", str(spec.config_file)))

    def pid(self) -> int | None:
        return self._daemon.pid()

    def running(self) -> bool:
        return self._daemon.running()

    def start(self) -> None:
        """Write the config and start haproxy, unless it runs already."""
        if self.running():
            return
        program = haproxy_program()
        if port_open(self.spec.port):
            raise ClusterError(f"front port {self.spec.port} is already in use; set CLUSTER_FRONT_PORT")
        run_as = "haproxy" if os.geteuid() == 0 and _user_exists("haproxy") else None
        self.spec.config_file.write_text(render_haproxy_cfg(self.spec, run_as))
        check = subprocess.run([program, "-c", "-q", "-f", str(self.spec.config_file)],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise ClusterError(f"haproxy rejected {self.spec.config_file}: {check.stderr.strip()}")
        self.spec.admin_socket.unlink(missing_ok=True)
        log.info("starting haproxy on 127.0.0.1:%s", self.spec.port)
        self._daemon.spawn([program, "-db", "-f", str(self.spec.config_file)], env={"PATH": os.defpath},
                           cwd=self.spec.home, output=self.spec.home / "haproxy.log")

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            log.info("stopping haproxy (pid %s)", pid)
            self._daemon.stop(STOP_GRACE_SECONDS, "haproxy")

    def up_servers(self) -> tuple[str, ...] | None:
        """The servers haproxy has in rotation now; None when its admin socket does not answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as admin:
                admin.settimeout(3)
                admin.connect(str(self.spec.admin_socket))
                admin.sendall(b"show stat\n")
                chunks = iter(lambda: admin.recv(65536), b"")
                return up_servers(b"".join(chunks).decode(errors="replace"))
        except OSError:
            return None

    def serves(self, servers: set[str]) -> bool:
        """The front answers AMQP and has (at least) `servers` in rotation."""
        return amqp_answers(self.spec.port) and servers <= set(self.up_servers() or ())

    def wait_serving(self, servers: set[str], deadline: Deadline) -> None:
        wait_until(lambda: self.serves(servers), deadline,
                   f"the front on 127.0.0.1:{self.spec.port} answering with {sorted(servers)} in rotation",
                   interval=0.1)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
