"""What the services wrote: their JSON log lines (one object a line, see the services' logs.py), read back.

A SIGKILL can cut a process' last line in half; such a line (and anything else that is not JSON) is skipped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


def json_lines(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        if not path.exists():
            continue
        for raw in path.read_bytes().splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                yield line


def times_of(paths: Iterable[Path], message: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
    """Wall-clock times (epoch seconds) of the lines whose "msg" is `message`, within [since, until)."""
    times = []
    for line in json_lines(paths):
        if line.get("msg") == message and "ts" in line:
            at = datetime.fromisoformat(line["ts"]).timestamp()
            if since <= at < until:
                times.append(at)
    return times


# Whose tracebacks count: the service itself and asyncio (an unhandled task exception). aiormq logs a forced close
# with a traceback as a warning, which is what a forced close looks like, not a failure; the fuzzers, which force no
# close, count aiormq's consumer-callback failures too.
SERVICE_LOGGERS = ("email_service", "producer_service", "asyncio")
WITH_CONSUMER_CALLBACKS = (*SERVICE_LOGGERS, "aiormq.channel")


def is_traceback(line: dict[str, Any], loggers: tuple[str, ...] = SERVICE_LOGGERS) -> bool:
    if "exc" not in line:
        return False
    logger, msg = str(line.get("logger")), str(line.get("msg", ""))
    if "aiormq.channel" in loggers and msg.startswith("Exception in callback <function _task_done"):
        return False  # asyncio repeating what aiormq.channel logged as "Consumer callback failed"
    return logger.startswith(loggers)


def tracebacks(paths: Iterable[Path], loggers: tuple[str, ...] = SERVICE_LOGGERS) -> Counter[str]:
    """Tracebacks grouped by logger, message and the exception's last line."""
    kinds: Counter[str] = Counter()
    for line in json_lines(paths):
        if is_traceback(line, loggers):
            last = str(line["exc"]).strip().splitlines()[-1]
            kinds[f"{line.get('logger')}: {str(line.get('msg', ''))[:60]!r} {last[:200]}"] += 1
    return kinds


@dataclass
class ServiceLogs:
    """The email-service logs of a scenario, summed up."""

    sent: Counter[str] = field(default_factory=Counter)  # event id -> "mail sent" lines
    duplicate_skips: int = 0  # "duplicate event skipped" (dedup on)
    left_unacked: list[int] = field(default_factory=list)  # per graceful shutdown
    tracebacks: int = 0

    @classmethod
    def read(cls, paths: Iterable[Path]) -> ServiceLogs:
        logs = cls()
        for line in json_lines(paths):
            msg = line.get("msg")
            if msg == "mail sent":
                logs.sent[str(line.get("event_id"))] += 1
            elif msg == "duplicate event skipped":
                logs.duplicate_skips += 1
            elif msg == "in-flight messages handled":
                logs.left_unacked.append(int(line.get("left_unacked", 0)))
            logs.tracebacks += is_traceback(line)
        return logs
