"""2. Producer: POST /v1/signups with wrk, 64 connections, one server process: ours, the ceiling app, and the
same endpoint enqueueing a Celery task; interleaved round by round, a 1 s warm-up discarded each time.

The queues are purged before and after every measurement, so no run publishes into a backlog.
"""

from __future__ import annotations

import dataclasses

from ..contenders.base import App
from ..contenders.ceiling import CeilingApp
from ..contenders.celery import CeleryApp
from ..contenders.ours import ProducerService
from ..load import wrk, wrk_command
from ..monitor import TreeMonitor, cpu_delta
from ..results import ProducerResult, Settings, WrkRun
from ..testbed import Testbed, log

QUEUES = ("email.welcome", "celery")


def measure(bed: Testbed, app: App, seconds: int, round_: int) -> WrkRun:
    broker = bed.broker
    assert broker is not None
    broker.purge(*QUEUES)
    proc, port = app.start(bed)
    monitor = TreeMonitor([proc.pid])
    try:
        wrk(port, 1)  # warm-up, discarded
        broker.purge(*QUEUES)
        cpu0 = monitor.cpu()
        report = wrk(port, seconds)
        cpu1 = monitor.cpu()
    finally:
        bed.processes.stop(proc, timeout=15)
        broker.purge(*QUEUES)
    return WrkRun(**dataclasses.asdict(report), contender=app.key, round=round_,
                  cpu_s_per_1000=round(cpu_delta(cpu0, cpu1) / max(report.requests, 1) * 1000, 3))


def run(bed: Testbed, settings: Settings) -> ProducerResult:
    apps: list[App] = [ProducerService(), CeilingApp(), CeleryApp()]
    runs = []
    for round_ in range(settings.runs):
        for app in apps:
            r = measure(bed, app, settings.wrk_seconds, round_)
            runs.append(r)
            log(f"2. producer run {round_ + 1}/{settings.runs}: {r.contender}: {r.rps} req/s, p50 {r.p50_ms} ms, "
                f"p99 {r.p99_ms} ms, non-2xx {r.non_2xx}")
    return ProducerResult(wrk_command=wrk_command(settings.wrk_seconds), runs=runs)
