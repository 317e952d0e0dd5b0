"""One private RabbitMQ node: its files, its process, its rabbitmqctl.

A node is usable alone (a broker of its own for a test that restarts it) or as a member of `Cluster`:

    node = Node(NodeSpec("wm-broker@localhost", amqp_port=5790, dist_port=25790,
                         home=Path("/tmp/wm-broker")))
    node.start()      # writes its files, boots it, returns once RabbitMQ runs
    node.restart()    # graceful stop, start again (its data stays)
    node.kill()       # SIGKILL: a crash
    node.remove()     # stop, delete its home

Invariants:
- Everything of the node lives in `home`: config, data (mnesia), logs, pid file, Erlang cookie. `home` is also the
  node's and its rabbitmqctl's HOME, so the cookie there is the only one they use; another cookie (the machine's
  broker, rabbit@localhost, has its own) can never reach it. home's parent must be traversable by the rabbitmq
  user (/tmp is; pytest's 0700 tmp_path is not).
- The node listens on its `address` only (127.0.0.1 unless it is given one): AMQP on `amqp_port`, Erlang
  distribution on `dist_port`. A node with a `netns` runs in that network namespace (its own epmd starts there,
  on its address), and so does its rabbitmqctl: the CLI takes the node's host name for its own, and peers that
  answer it (list_* rows come from every node) reach it there. `inetrc` (ERL_INETRC) says which host is where.
- The VM runs in the foreground of its own session (RabbitMQ's "under systemd" mode: no wrapper shell, no
  -detached double fork), so the pid we spawn is the VM's and goes into the pid file at once.
- Nothing here touches another node: it signals only a pid whose command line carries `-home <its home>`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from . import ctl_json, epmd
from .ctl_json import ClusterStatus
from .errors import ClusterError
from .probe import port_open
from .process import Daemon
from .rabbitmq import RabbitMQ
from .waiting import Deadline

log = logging.getLogger(__name__)
BOOT_TIMEOUT_SECONDS = 180
STOP_GRACE_SECONDS = 30
CTL_TIMEOUT_SECONDS = 60
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class NodeSpec:
    """Who a node is and where it lives. `seed`: the node a blank node joins at its first boot (None: alone).
    `address`, `netns`, `inetrc`: where it listens, the network namespace it runs in (None: the machine's), the
    Erlang hosts file naming every node's host (None: the system resolver); `net_ticktime`: Erlang's (None: 60 s)."""

    name: str
    amqp_port: int
    dist_port: int
    home: Path
    seed: str | None = None
    address: str = "127.0.0.1"
    netns: str | None = None
    inetrc: Path | None = None
    net_ticktime: int | None = None

    @property
    def short_name(self) -> str:
        return self.name.split("@", 1)[0]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.address}:{self.amqp_port}/"

    @property
    def pid_file(self) -> Path:
        return self.home / "rabbitmq.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "log" / f"{self.name}.log"


def render_rabbitmq_conf(spec: NodeSpec) -> str:
    """The node's rabbitmq.conf (it replaces /etc/rabbitmq/rabbitmq.conf for this node)."""
    lines = [f"# written by local_cluster for {spec.name}",
             f"listeners.tcp.1 = {spec.address}:{spec.amqp_port}",
             "log.console = false",
             "log.file.level = info"]
    if not spec.address.startswith("127."):  # clients arrive from another address (the front, in the machine's
        lines += ["loopback_users.guest = false"]  # namespace): guest/guest must work from there too (tests only)
    if spec.seed is not None:
        lines += ["cluster_partition_handling = pause_minority",
                  "# a blank node joins the seed at its first boot; a node with data rejoins its cluster from disk",
                  "cluster_formation.peer_discovery_backend = classic_config",
                  f"cluster_formation.classic_config.nodes.1 = {spec.seed}"]
    return "\n".join(lines) + "\n"


def node_environment(spec: NodeSpec) -> dict[str, str]:
    """The environment RabbitMQ's scripts get for this node, the server and rabbitmqctl alike."""
    home = str(spec.home)
    return {
        "PATH": PATH, "HOME": home, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
        # /dev/null is not a regular file, so /etc/rabbitmq/rabbitmq-env.conf (it names rabbit@localhost) is not read
        "RABBITMQ_CONF_ENV_FILE": "/dev/null",
        "RABBITMQ_CONFIG_FILE": f"{home}/rabbitmq.conf",
        "RABBITMQ_ADVANCED_CONFIG_FILE": f"{home}/advanced.config",
        "RABBITMQ_ENABLED_PLUGINS_FILE": f"{home}/enabled_plugins",
        "RABBITMQ_NODENAME": spec.name,
        "RABBITMQ_NODE_IP_ADDRESS": spec.address,
        "RABBITMQ_NODE_PORT": str(spec.amqp_port),
        "RABBITMQ_DIST_PORT": str(spec.dist_port),
        "RABBITMQ_MNESIA_BASE": f"{home}/mnesia",
        "RABBITMQ_LOG_BASE": f"{home}/log",
        "RABBITMQ_PID_FILE": str(spec.pid_file),
        "ERL_EPMD_ADDRESS": spec.address,
        "ERL_FLAGS": erl_flags(spec),
        **({"ERL_INETRC": str(spec.inetrc)} if spec.inetrc else {}),
    }


def erl_flags(spec: NodeSpec) -> str:
    """The distribution listens on the node's address only; net_ticktime as the spec says (the nodes and
    rabbitmqctl must agree on it)."""
    flags = f"-kernel inet_dist_use_interface {{{spec.address.replace('.', ',')}}}"
    return flags + (f" -kernel net_ticktime {spec.net_ticktime}" if spec.net_ticktime else "")


def new_cookie() -> str:
    return secrets.token_hex(20).upper()


class Node:
    """A handle on one node; cheap to create, and any handle finds the running node again by its pid file."""

    def __init__(self, spec: NodeSpec, cookie_file: Path | None = None, rabbit: RabbitMQ | None = None) -> None:
        """`cookie_file`: the Erlang cookie to share (a cluster's); None: a random cookie of the node's own."""
        self.spec = spec
        self._cookie_file = cookie_file
        self._rabbit = rabbit
        self._daemon = Daemon(spec.pid_file, marker=("-home", str(spec.home)))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        return self.spec.url

    @cached_property
    def rabbit(self) -> RabbitMQ:
        return self._rabbit or RabbitMQ.locate()

    def pid(self) -> int | None:
        return self._daemon.pid()

    def running(self) -> bool:
        return self._daemon.running()

    def blank(self) -> bool:
        """No data yet: the node has never booted (a blank clustered node joins its seed when it does)."""
        data = self.spec.home / "mnesia"
        return not data.is_dir() or not any(data.iterdir())

    def prepare(self) -> None:
        """Write the node's files; keeps its data and its cookie, so a restarted node is the same node."""
        home = self.spec.home
        for directory in (home, home / "mnesia", home / "log"):
            directory.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            shared = self._cookie_file.read_text().strip() if self._cookie_file else None
            cookie.write_text(shared or new_cookie())
            cookie.chmod(0o400)
        (home / "rabbitmq.conf").write_text(render_rabbitmq_conf(self.spec))
        (home / "enabled_plugins").write_text("[].\n")
        owner = self.rabbit.owner()
        if owner is not None:
            for path in (home, *home.rglob("*")):
                os.chown(path, *owner)

    def check_free(self) -> None:
        """Nothing else holds the node's name or ports (a node that does not run but would not start)."""
        if self.spec.netns is not None:
            return  # its name and ports live in its own namespace, created empty for it
        if self.spec.short_name in (epmd.registered_names() or {}):
            raise ClusterError(f"{self.name} is registered with epmd but is not ours "
                               f"(pid file {self.spec.pid_file}): stop it first")
        for port in (self.spec.amqp_port, self.spec.dist_port):
            if port_open(port):
                raise ClusterError(f"port {port} (for {self.name}) is already in use")

    def spawn(self) -> None:
        """Start the VM without waiting for RabbitMQ to boot (see `wait_booted`); nothing if it runs."""
        if self.running():
            return
        self.check_free()
        self.prepare()
        log.info("starting %s (amqp %s, dist %s)", self.name, self.spec.amqp_port, self.spec.dist_port)
        argv, user = self.rabbit.command([self.rabbit.tool("rabbitmq-server")], self.spec.netns)
        self._daemon.spawn(argv, env={**node_environment(self.spec), "RUNNING_UNDER_SYSTEMD": "true"},
                           cwd=self.spec.home, output=self.spec.home / "log" / "stdout.log", user=user)

    def wait_booted(self, deadline: Deadline) -> None:
        """Return once RabbitMQ runs on the node; fails at once when the VM dies while booting."""
        seconds = int(deadline.left(at_least=1))
        result = self._ctl(["wait", str(self.spec.pid_file), "--timeout", str(seconds)], timeout=seconds + 15)
        if result.returncode != 0:
            raise ClusterError(f"{self.name} did not boot within {seconds}s; see {self.spec.log_file}")

    def start(self, timeout: float = BOOT_TIMEOUT_SECONDS) -> None:
        """Spawn the node (if it does not run) and wait until RabbitMQ runs on it."""
        deadline = Deadline(timeout)
        self.spawn()
        self.wait_booted(deadline)

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Graceful stop (SIGTERM: RabbitMQ shuts down cleanly); SIGKILL after `grace_seconds`."""
        self._daemon.stop(grace_seconds, self.name)

    def kill(self) -> None:
        """SIGKILL (no shutdown at all: connections drop, Raft members vanish); returns once the VM is gone."""
        pid = self.pid()
        if pid is None:
            raise ClusterError(f"{self.name} is not running")
        log.info("SIGKILL %s (pid %s)", self.name, pid)
        self._daemon.kill(self.name)

    def restart(self, timeout: float = BOOT_TIMEOUT_SECONDS) -> None:
        """Graceful stop, then start again with the same data."""
        self.stop()
        self.start(timeout)

    def remove(self) -> None:
        """Stop the node and delete its home (data, logs, cookie)."""
        self.stop()
        shutil.rmtree(self.spec.home, ignore_errors=True)

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT_SECONDS) -> str:
        """rabbitmqctl against this node; its stdout. A failing command raises ClusterError with its message."""
        result = self._ctl(list(args), timeout)
        if result.returncode != 0:
            raise ClusterError(f"rabbitmqctl -n {self.name} {' '.join(args)} failed (exit {result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()}")
        return result.stdout

    def ctl_json(self, *args: str, timeout: float = CTL_TIMEOUT_SECONDS) -> Any:
        """rabbitmqctl -q ... --formatter json, parsed."""
        return ctl_json.parse(self.ctl("-q", *args, "--formatter", "json", timeout=timeout), args[0])

    def cluster_status(self) -> ClusterStatus:
        return ClusterStatus.from_json(self.ctl("-q", "cluster_status", "--formatter", "json"))

    def _ctl(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        argv = [self.rabbit.tool("rabbitmqctl"), "-n", self.name, *args]
        return self.rabbit.run(argv, node_environment(self.spec), cwd=self.spec.home, timeout=timeout,
                               netns=self.spec.netns)
