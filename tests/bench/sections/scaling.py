"""4. Horizontal scaling against an SMTP server that answers each mail after 50 ms (tests/bench/sink.py;
smtp-sink's -w takes whole seconds only).

Each round fills the queue, starts 8 email-service processes with CONCURRENCY=1 and measures the sink's rate
over a window; then stops processes down to 4, 2 and 1, measuring each; then one process with CONCURRENCY=16
(default pool, then SMTP_POOL_SIZE=16). With 50 ms per mail, one process at CONCURRENCY=1 manages ~20 mails/s.
"""

from __future__ import annotations

import time

from tests.support.processes import ServiceProcess

from ..contenders.base import fill
from ..contenders.ours import EmailService
from ..results import ScalingConfig, ScalingResult, ScalingRun, Settings
from ..sinks import PySink
from ..testbed import Testbed, log, wait_ready

SMTP_DELAY_S = 0.05
QUEUED = 6000  # more than 8 processes x 20 mails/s x the windows of one round
SINGLE = (ScalingConfig(1, 16), ScalingConfig(1, 16, pool_size=16))


def measure(sink: PySink, ports: list[int], window: float) -> float:
    """Mails per second the sink accepted over `window`, once every process is ready and settled."""
    for port in ports:
        wait_ready(port, 60, "email-service")
    time.sleep(0.7)  # let every consumer reach its steady rate (prefetch filled, pool connected)
    s0, t0 = sink.count(), time.monotonic()
    time.sleep(window)
    s1, t1 = sink.count(), time.monotonic()
    return round((s1 - s0) / (t1 - t0), 2)


def run(bed: Testbed, settings: Settings) -> ScalingResult:
    broker = bed.broker
    assert broker is not None
    sink = PySink(bed.processes, delay=SMTP_DELAY_S)
    runs: list[ScalingRun] = []

    def record(config: ScalingConfig, round_: int, rate: float) -> None:
        runs.append(ScalingRun(config, round_, rate))
        log(f"4. scaling run {round_ + 1}/{settings.runs}: {config.label}: {rate:.1f} mails/s")

    try:
        for round_ in range(settings.runs):
            one = EmailService(concurrency=1)
            fill(one, broker, QUEUED)
            alive: list[tuple[ServiceProcess, int]] = [one.start_one(bed, sink.port) for _ in range(8)]
            for k in (8, 4, 2, 1):
                while len(alive) > k:
                    bed.processes.stop(alive.pop()[0], timeout=10)
                record(ScalingConfig(k, 1), round_,
                       measure(sink, [port for _, port in alive], settings.scaling_seconds))
            bed.processes.stop(*[proc for proc, _ in alive], timeout=10)
            for config in SINGLE:
                proc, port = EmailService(concurrency=config.concurrency, pool_size=config.pool_size).start_one(
                    bed, sink.port)
                record(config, round_, measure(sink, [port], settings.scaling_seconds))
                bed.processes.stop(proc, timeout=10)
    finally:
        sink.stop()
        broker.purge("email.welcome")
    return ScalingResult(smtp_delay_s=SMTP_DELAY_S, window_s=settings.scaling_seconds, runs=runs)
