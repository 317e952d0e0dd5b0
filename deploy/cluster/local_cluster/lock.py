"""One changing command at a time: up, down, start and kill hold an exclusive flock.

The lock is taken on this package's own source file (opened read-only), as the shell tool locked itself: nothing
is created for it and nothing is left behind, and the lock dies with the process holding it. It is per machine, so
two clusters with different settings also take turns.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .waiting import Deadline, wait_until

LOCK_TARGET = Path(__file__)


def _try_lock(handle: IO[bytes]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def exclusive(deadline: Deadline) -> Iterator[None]:
    with LOCK_TARGET.open("rb") as handle:
        wait_until(lambda: _try_lock(handle), deadline, "another cluster command to finish", interval=0.2)
        yield
