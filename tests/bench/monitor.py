"""What the contenders cost: summed RSS and CPU time of some processes and all their children (psutil).

Invariant: a figure covers the whole tree (a Celery master and its prefork children, a Dramatiq master and its
worker processes), read at the moment asked; processes that exit between two readings are skipped, not an error.
"""

from __future__ import annotations

import contextlib
import threading

import psutil

MB = 1024 * 1024


class TreeMonitor(threading.Thread):
    """Samples the tree's summed RSS every `interval` seconds while running; `cpu()` is a CPU-time snapshot."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.roots = [psutil.Process(pid) for pid in pids]
        self.interval = interval
        self.peak_rss = 0
        self.samples: list[int] = []
        self._halt = threading.Event()

    def processes(self) -> list[psutil.Process]:
        out = []
        for root in self.roots:
            with contextlib.suppress(psutil.Error):
                out.append(root)
                out.extend(root.children(recursive=True))
        return out

    def rss(self) -> int:
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def cpu(self) -> dict[int, float]:
        """CPU seconds (user + system, own and reaped children's) per pid of the tree."""
        out = {}
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system + t.children_user + t.children_system
        return out

    def run(self) -> None:
        while not self._halt.is_set():
            rss = self.rss()
            self.samples.append(rss)
            self.peak_rss = max(self.peak_rss, rss)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots (a process new in `after` counts from zero)."""
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)
