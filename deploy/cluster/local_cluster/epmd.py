"""The machine's epmd (port 4369), where every Erlang node registers its name.

Nodes of this tool register with whatever epmd runs (the machine's broker usually started one). When none runs,
the first node starts one; the cluster notes that in its state directory so that `down` can stop it again once
no node is registered any more (`epmd -kill` refuses while one is).
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path

from .rabbitmq import find_program
from .waiting import Deadline

log = logging.getLogger(__name__)
NAME_LINE = re.compile(r"^name (\S+) at port (\d+)$", re.MULTILINE)


def parse_names(text: str) -> dict[str, int]:
    """`epmd -names` output -> short node name -> distribution port."""
    return {name: int(port) for name, port in NAME_LINE.findall(text)}


def _epmd(*args: str) -> subprocess.CompletedProcess[str] | None:
    program = find_program("epmd")
    if program is None:
        return None
    return subprocess.run([program, *args], capture_output=True, text=True, timeout=10)


def registered_names() -> dict[str, int] | None:
    """The names registered now; None when no epmd answers."""
    result = _epmd("-names")
    if result is None or result.returncode != 0:
        return None
    return parse_names(result.stdout)


def note_if_absent(marker: Path) -> None:
    """Before the first node starts: remember in `marker` when no epmd runs (that node will start one)."""
    if not marker.exists() and registered_names() is None:
        log.info("no epmd is running: the first node starts one, and `down` stops it")
        marker.touch()


def stop_if_started_here(marker: Path, wait_seconds: float = 5) -> None:
    """Stop the epmd noted in `marker`, once the stopped nodes have left it; leave it when others remain."""
    if not marker.exists():
        return
    deadline = Deadline(wait_seconds)
    while registered_names() and not deadline.passed():
        time.sleep(0.2)
    if registered_names():
        log.info("leaving epmd running: other nodes are registered")
        return
    log.info("stopping the epmd the cluster started")
    _epmd("-kill")
