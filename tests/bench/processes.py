"""Every process the benchmark starts, in one registry, so the driver can stop them all on exit (also after Ctrl-C).

Each is a tests.support.processes.ServiceProcess without a log file: its own process group, dies with the bench,
output drained from a pipe (as a container runtime reads a pod's stdout: the log lines are written and paid for,
not stored), the last 64 KiB kept for error messages, or every chunk handed to `on_output`.

Invariant: a process started here is in `live` until `stop()` has SIGTERMed it, waited, and SIGKILLed its whole
group; `stop_all()` leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.processes import ServiceProcess, stop_all


class Processes:
    def __init__(self) -> None:
        self.live: list[ServiceProcess] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
              on_output: Callable[[bytes], None] | None = None) -> ServiceProcess:
        """Start `argv` with os.environ updated by `env`."""
        process = ServiceProcess(name, argv, env or {}, None, cwd=cwd, on_output=on_output).start()
        self.live.append(process)
        return process

    def tail(self, process: ServiceProcess, limit: int = 2000) -> str:
        """The end of what `process` printed, for an error message."""
        return process.output()[-limit:]

    def stop(self, *processes: ServiceProcess, timeout: float = 10.0) -> None:
        """SIGTERM to each (they stop in parallel), then SIGKILL to the group of anything still there."""
        stop_all(processes, grace=timeout)
        for process in processes:
            if process in self.live:
                self.live.remove(process)

    def stop_all(self) -> None:
        self.stop(*list(self.live), timeout=5)
