"""Bounded waits: every wait of the tool has a deadline, and says what it waited for when it runs out."""

from __future__ import annotations

import time
from typing import Callable

from .errors import ClusterError

POLL_SECONDS = 0.2


class Deadline:
    """A point in time (monotonic) by which an operation must be done."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds

    def left(self, at_least: float = 0.0) -> float:
        """Seconds still available, never less than `at_least` (a subprocess timeout must be positive)."""
        return max(at_least, self._at - time.monotonic())

    def passed(self) -> bool:
        return time.monotonic() >= self._at


def wait_until(condition: Callable[[], bool], deadline: Deadline, what: str,
               interval: float = POLL_SECONDS) -> None:
    """Return once `condition()` holds; raise ClusterError naming `what` when the deadline passes first."""
    while not condition():
        if deadline.passed():
            raise ClusterError(f"{what}: not within {deadline.seconds:g}s")
        time.sleep(interval)
