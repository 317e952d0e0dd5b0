"""A long-running process started by this tool and found again through its pid file.

Invariants:
- The process runs in a session of its own (Ctrl-C in the terminal or the end of the starting process does not
  reach it) and is remembered by a pid file written the moment it is spawned, so a later call, from this process
  or another one, finds it.
- A pid read from the pid file is trusted only while that process's command line still carries `marker` (pids get
  reused): nothing else is ever signalled.
- A zombie counts as gone: the VM is dead even when nobody has reaped it yet.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from .errors import ClusterError
from .waiting import Deadline, wait_until

KILL_WAIT_SECONDS = 10


def command_line(pid: int) -> list[str] | None:
    """The argv of a live, non-zombie process, or None."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return None
    if state == "Z":
        return None
    return [arg.decode(errors="replace") for arg in argv if arg]


def carries(argv: Sequence[str], marker: Sequence[str]) -> bool:
    """`marker` appears in `argv` as consecutive arguments (["-home", "/tmp/x/rc1"] does not match /tmp/x/rc10)."""
    width = len(marker)
    return any(list(argv[i:i + width]) == list(marker) for i in range(len(argv) - width + 1))


class Daemon:
    """One background process: spawn, find, signal, wait for its end."""

    def __init__(self, pid_file: Path, marker: Sequence[str]) -> None:
        self.pid_file = pid_file
        self.marker = tuple(marker)
        self._child: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, output: Path,
              user: str | None = None) -> int:
        """Start `argv` detached, output appended to `output`, as `user` if given (we must be root then)."""
        with output.open("ab") as log:
            self._child = subprocess.Popen(
                list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, user=user, group=user, extra_groups=[] if user else None)
        self.pid_file.write_text(f"{self._child.pid}\n")
        if user is not None:   # the process may rewrite it (RabbitMQ does, with the same pid)
            entry = pwd.getpwnam(user)
            os.chown(self.pid_file, entry.pw_uid, entry.pw_gid)
        return self._child.pid

    def pid(self) -> int | None:
        """The pid of the live process, or None."""
        child = self._child
        if child is not None:
            if child.poll() is None:
                return child.pid
            self._child = None
        try:
            pid = int(self.pid_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return None
        argv = command_line(pid) if pid > 0 else None
        return pid if argv is not None and carries(argv, self.marker) else None

    def running(self) -> bool:
        return self.pid() is not None

    def signal(self, signum: int) -> int | None:
        """Send `signum` to the live process; its pid, or None when there was none."""
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                return None
        return pid

    def wait_gone(self, pid: int, deadline: Deadline, what: str) -> None:
        def gone() -> bool:
            if self._child is not None and self._child.pid == pid:
                return self._child.poll() is not None
            return command_line(pid) is None
        wait_until(gone, deadline, what, interval=0.05)

    def stop(self, grace_seconds: float, what: str) -> None:
        """SIGTERM (a graceful stop); SIGKILL when it is still there after `grace_seconds`."""
        pid = self.signal(signal.SIGTERM)
        if pid is None:
            return
        try:
            self.wait_gone(pid, Deadline(grace_seconds), f"{what} stopping on SIGTERM")
        except ClusterError:
            self.kill(what)

    def kill(self, what: str) -> None:
        """SIGKILL, and return once the process is gone."""
        pid = self.signal(signal.SIGKILL)
        if pid is not None:
            self.wait_gone(pid, Deadline(KILL_WAIT_SECONDS), f"{what} going away on SIGKILL")
