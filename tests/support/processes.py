"""The services (and other helpers such as redis-server) as real OS processes, for signals, kills and restarts.

Invariants:
- every process runs in a process group of its own, so a kill reaches whatever it started;
- every process gets SIGKILL when the test runner dies (util-linux `setpriv --pdeathsig`), so none outlives a
  killed run;
- output (stdout and stderr) goes to a log file, kept for post-mortems and read back with `output()`; or, without
  a log file, to a pipe a thread drains, as a container runtime reads a pod's stdout (the benchmarks: the lines
  are written and paid for, not stored): only the last 64 KiB are kept, or every chunk goes to `on_output`;
- `stop()` never leaves a process behind: SIGTERM, a bounded wait, then SIGKILL to the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from .probes import http_ok
from .waits import eventually

VENV_BIN = Path(sys.executable).parent
_DIE_WITH_US = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
_TAIL = 64 * 1024


class ServiceProcess:
    """One child process: start it, wait until it is ready, signal it, stop it, read what it wrote."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path | None,
                 ready_url: str | None = None, cwd: Path | None = None,
                 on_output: Callable[[bytes], None] | None = None) -> None:
        self.name = name
        self.ready_url = ready_url  # what wait_ready() polls unless told another URL
        self.argv = argv
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.cwd = cwd
        self.on_output = on_output
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._tail = bytearray()

    def start(self) -> ServiceProcess:
        assert not self.alive, f"{self.name} is already running"
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen([*_DIE_WITH_US, *self.argv], env=self.env, cwd=self.cwd,
                                     stdout=self._log or subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if self._log is None:
            threading.Thread(target=self._drain, name=f"drain-{self.name}", daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 1 << 20):
            if self.on_output is not None:
                self.on_output(chunk)
                continue
            self._tail.extend(chunk)
            if len(self._tail) > 2 * _TAIL:
                del self._tail[:-_TAIL]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Signal the process itself (the services handle SIGTERM and SIGINT)."""
        if self.alive:
            assert self.proc is not None
            os.kill(self.proc.pid, signum)

    def kill(self) -> int:
        """SIGKILL the whole group at once; returns the exit code."""
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        assert self.proc is not None
        return self.proc.wait()

    async def wait_exit(self, timeout: float) -> int:
        """Wait (bounded) until the process has exited; returns its exit code."""
        await eventually(lambda: not self.alive, timeout=timeout, interval=0.05, what=f"{self.name} to exit")
        assert self.proc is not None and self.proc.returncode is not None
        return self.proc.returncode

    async def wait_ready(self, url: str | None = None, timeout: float = 30) -> None:
        """Wait until `url` (or `ready_url`) answers 200; fail at once, with the log's tail, when the process exits
        instead."""
        url = url or self.ready_url
        assert url is not None, f"{self.name}: no readiness URL"

        async def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} before it was ready "
                                     f"({self.log_path}):\n{self.output()[-3000:]}")
            return await http_ok(url)

        await eventually(ready, timeout=timeout, interval=0.1, what=f"{self.name} ready at {url} ({self.log_path})")

    def stop(self, grace: float = 15) -> int | None:
        """SIGTERM, then SIGKILL to the group if it has not exited within `grace` seconds; returns the exit code."""
        if self.proc is None:
            return None
        if self.alive:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        code = self.kill()  # also whatever the process started
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def output(self) -> str:
        """What the process wrote: the whole log file, or the last 64 KiB of its drained output."""
        if self.log_path is None:
            return bytes(self._tail).decode("utf-8", "replace")
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def stop_all(processes: Iterable[ServiceProcess], grace: float = 20) -> None:
    """Graceful stop of many at once: SIGTERM to all (they shut down in parallel), then `stop()` each."""
    processes = list(processes)
    for process in processes:
        process.signal(signal.SIGTERM)
    for process in processes:
        process.stop(grace=grace)


async def stop_all_async(processes: Iterable[ServiceProcess], grace: float = 20) -> None:
    await asyncio.to_thread(stop_all, list(processes), grace)


def email_process(env: dict[str, str], log_path: Path, name: str = "email-service") -> ServiceProcess:
    """`email-service run` with this environment (build it with tests.support.env.email_env)."""
    return ServiceProcess(name, [str(VENV_BIN / "email-service"), "run"], env, log_path,
                          ready_url=f"http://127.0.0.1:{env['METRICS_PORT']}/readyz" if "METRICS_PORT" in env else None)


def producer_process(env: dict[str, str], log_path: Path, name: str = "producer-service") -> ServiceProcess:
    """`producer-service` with this environment (build it with tests.support.env.producer_env)."""
    return ServiceProcess(name, [str(VENV_BIN / "producer-service")], env, log_path,
                          ready_url=f"http://127.0.0.1:{env['HTTP_PORT']}/readyz" if "HTTP_PORT" in env else None)


CAPTURE_SCRIPT = Path(__file__).resolve().parents[2] / "deploy/local/smtp_capture.py"


def smtp_capture_process(folder: Path, smtp_port: int, http_port: int, log_path: Path) -> ServiceProcess:
    """`make run`'s SMTP capture with its mail viewer (deploy/local/smtp_capture.py), writing .eml files to folder."""
    return ServiceProcess("smtp-capture", [sys.executable, str(CAPTURE_SCRIPT), "--port", str(smtp_port),
                                           "--http-port", str(http_port), "--dir", str(folder)], {}, log_path,
                          ready_url=f"http://127.0.0.1:{http_port}/api/mails")
