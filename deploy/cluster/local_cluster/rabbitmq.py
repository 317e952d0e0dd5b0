"""The machine's RabbitMQ installation, used to run private nodes: where its scripts are, and running them as the
rabbitmq user.

Debian's /usr/sbin/rabbitmq-server is a wrapper that, run as rabbitmq, sends output to /var/log/rabbitmq; the real
scripts live next to its target (/usr/lib/rabbitmq/bin) and are called directly. Everything runs as the rabbitmq
user: when we are root the child switches to it (no runuser, no shell in between); when we are that user already
nothing switches; anyone else is refused before anything starts.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .errors import ClusterError

RABBIT_USER = "rabbitmq"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/lib/erlang/bin"])


def find_program(name: str) -> str | None:
    """`name` on PATH or in the sbin directories root's PATH usually has and a plain user's lacks."""
    return shutil.which(name, path=SEARCH_PATH)


@dataclass(frozen=True)
class RabbitMQ:
    """Where RabbitMQ's scripts are and which user runs them (None: the current one)."""

    bin_dir: Path
    run_as: str | None

    @classmethod
    def locate(cls) -> RabbitMQ:
        server = find_program("rabbitmq-server")
        if server is None:
            raise ClusterError("rabbitmq-server is not installed: apt-get install -y rabbitmq-server")
        bin_dir = Path(server).resolve().parent
        if not (bin_dir / "rabbitmqctl").is_file():
            raise ClusterError(f"no rabbitmqctl next to {server}")
        return cls(bin_dir, run_as=required_user())

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def owner(self) -> tuple[int, int] | None:
        """uid, gid files must belong to so that the nodes can use them (None: ours already)."""
        if self.run_as is None:
            return None
        entry = pwd.getpwnam(self.run_as)
        return entry.pw_uid, entry.pw_gid

    def command(self, argv: Sequence[str], netns: str | None) -> tuple[list[str], str | None]:
        """`argv` to run as `run_as` in network namespace `netns` (None: ours), and the user Popen must switch to.
        In a namespace, root enters it and setpriv then becomes `run_as`; both exec, so the pid stays the tool's."""
        if netns is None:
            return list(argv), self.run_as
        ip = find_program("ip") or "ip"
        user = [] if self.run_as is None else ["setpriv", f"--reuid={self.run_as}", f"--regid={self.run_as}",
                                               "--clear-groups"]
        return [ip, "netns", "exec", netns, *user, *argv], None

    def run(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float,
            netns: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run one RabbitMQ tool to its end (in `netns`, if given) and capture its output; a tool that hangs is an
        error."""
        command, user = self.command(argv, netns)
        try:
            return subprocess.run(command, env=dict(env), cwd=cwd, capture_output=True, text=True,
                                  timeout=timeout, user=user, group=user, extra_groups=[] if user else None)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{' '.join(argv[:4])} ... did not finish within {timeout:g}s") from None


def required_user() -> str | None:
    """The user to switch to: rabbitmq when we are root, None when we are rabbitmq; anyone else cannot run nodes."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RABBIT_USER)
        except KeyError:
            raise ClusterError(f"no {RABBIT_USER} user: apt-get install -y rabbitmq-server") from None
        return RABBIT_USER
    if pwd.getpwuid(os.geteuid()).pw_name == RABBIT_USER:
        return None
    raise ClusterError(f"run me as root (the nodes and rabbitmqctl run as the {RABBIT_USER} user)")
