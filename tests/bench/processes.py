"""Every process the benchmark starts: each in its own process group, its output drained, all stopped at the end.

Invariant: a process started here is in `live` until `stop()` has SIGTERMed it, waited, and SIGKILLed its whole
group; `stop_all()` (the driver calls it on exit, also after Ctrl-C) leaves nothing behind. Output (stdout and
stderr together) goes to a pipe a thread drains, as a container runtime reads a pod's stdout: the log lines are
written and paid for, only the last 64 KiB are kept (for error messages), or handed to `on_output`.

The seam for tests/support/processes.py: `start(name, argv, env)` and `stop(*procs)`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

TAIL = 64 * 1024


class Processes:
    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []
        self._tails: dict[int, bytearray] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
              on_output: Callable[[bytes], None] | None = None) -> subprocess.Popen:
        """Start `argv` with os.environ updated by `env`; `on_output` gets every chunk of output instead of the
        tail buffer."""
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        proc.bench_name = name  # type: ignore[attr-defined]
        self.live.append(proc)
        tail = self._tails[proc.pid] = bytearray()

        def drain() -> None:
            fd = proc.stdout.fileno()  # type: ignore[union-attr]
            while chunk := os.read(fd, 1 << 20):
                if on_output is not None:
                    on_output(chunk)
                    continue
                tail.extend(chunk)
                if len(tail) > 2 * TAIL:
                    del tail[:-TAIL]

        threading.Thread(target=drain, name=f"drain-{name}", daemon=True).start()
        return proc

    def tail(self, proc: subprocess.Popen, limit: int = 2000) -> str:
        """The end of what `proc` printed, for an error message."""
        return bytes(self._tails.get(proc.pid, b""))[-limit:].decode("utf-8", "replace")

    def stop(self, *procs: subprocess.Popen, timeout: float = 10.0) -> None:
        """SIGTERM to each leader (graceful), then SIGKILL to the whole group of anything still there."""
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            if proc in self.live:
                self.live.remove(proc)
            self._tails.pop(proc.pid, None)

    def stop_all(self) -> None:
        self.stop(*list(self.live), timeout=5)
