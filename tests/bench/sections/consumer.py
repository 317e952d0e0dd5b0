"""1. Consumer: drain n queued signups into smtp-sink; ours (LOG_LEVEL info and warning), Celery, Dramatiq and the
ceiling, with 1 and 2 processes, interleaved round by round.

Timed from the moment all consumers are registered to the last mail counted by `smtp-sink -c` (mails that
arrived before the clock started are not counted); CPU is summed over the worker processes and their children.
"""

from __future__ import annotations

import time

from tests.support.fault_proxy import FaultProxy
from tests.support.waits import WaitTimedOut

from ..contenders.base import Consumer, fill
from ..contenders.ceiling import CeilingConsumer
from ..contenders.celery import CeleryWorker
from ..contenders.dramatiq import DramatiqWorker
from ..contenders.ours import EmailService
from ..monitor import MB, TreeMonitor, cpu_delta
from ..results import ConcurrencyTrial, ConsumerResult, Drain, Settings
from ..sinks import SmtpSink
from ..testbed import Testbed, log

TRIAL_CONCURRENCIES = (8, 16, 32)


def drain(bed: Testbed, consumer: Consumer, processes: int, n: int, round_: int = 0, rtt: float = 0.0) -> Drain:
    """`rtt` > 0: the consumers reach smtp-sink through a FaultProxy that holds every chunk rtt/2 each way."""
    broker = bed.broker
    assert broker is not None
    wall = time.monotonic()
    fill(consumer, broker, n)
    sink = SmtpSink(bed.processes)
    proxy = FaultProxy(sink.port).start() if rtt else None
    if proxy is not None:
        proxy.latency(rtt / 2)
    workers = consumer.start(bed, processes, proxy.port if proxy is not None else sink.port)
    monitor = TreeMonitor([w.pid for w in workers])
    monitor.start()
    try:
        try:
            broker.wait_consumers(consumer.queue, consumer.consumers_registered(processes), timeout=60)
        except WaitTimedOut as exc:
            raise RuntimeError(f"{consumer.key}: {exc}; output: {bed.processes.tail(workers[0])}") from None
        t_start, done_before, cpu0 = time.monotonic(), sink.count, monitor.cpu()
        if not sink.wait_count(n, timeout=max(60.0, n / 50)):
            raise RuntimeError(f"{consumer.key} x{processes}: only {sink.count} of {n} mails arrived; "
                               f"output: {bed.processes.tail(workers[0])}")
        t_end, cpu1 = time.monotonic(), monitor.cpu()
    finally:
        monitor.stop()
        bed.processes.stop(*workers, timeout=5)
        if proxy is not None:
            proxy.stop()
        sink.stop()
        broker.purge(consumer.queue)
    mails, seconds = n - done_before, t_end - t_start
    return Drain(contender=consumer.key, processes=processes, round=round_, n=n, measured_mails=mails,
                 seconds=round(seconds, 3), mails_per_s=round(mails / seconds, 1),
                 cpu_s_per_1000=round(cpu_delta(cpu0, cpu1) / mails * 1000, 3),
                 peak_rss_mb=round(monitor.peak_rss / MB, 1), wall_s=round(time.monotonic() - wall, 1))


def pick_concurrency(bed: Testbed, n: int) -> list[ConcurrencyTrial]:
    log(f"1. consumer: picking CONCURRENCY for the email-service ({'/'.join(map(str, TRIAL_CONCURRENCIES))}, "
        f"once each, 1 process, {n} mails)")
    trials = []
    for c in TRIAL_CONCURRENCIES:
        trials.append(ConcurrencyTrial(c, drain(bed, EmailService("info", c), 1, n)))
        log(f"   CONCURRENCY={c}: {trials[-1].drain.mails_per_s} mails/s")
    return trials


def run(bed: Testbed, settings: Settings) -> ConsumerResult:
    trials = [] if settings.concurrency else pick_concurrency(bed, settings.n // 2)
    concurrency = settings.concurrency or max(trials, key=lambda t: t.drain.mails_per_s).concurrency
    contenders: list[tuple[Consumer, int]] = [
        (EmailService("info", concurrency), settings.n), (EmailService("warning", concurrency), settings.n),
        (CeleryWorker(), settings.n_peers), (DramatiqWorker(), settings.n_peers), (CeilingConsumer(), settings.n)]
    drains = []
    for round_ in range(settings.runs):
        for processes in (1, 2):
            for consumer, n in contenders:
                d = drain(bed, consumer, processes, n, round_)
                drains.append(d)
                log(f"1. consumer run {round_ + 1}/{settings.runs}: {d.contender} x{processes}: {d.mails_per_s} "
                    f"mails/s, {d.cpu_s_per_1000} CPU s/1000, peak RSS {d.peak_rss_mb} MB")
    return ConsumerResult(n_ours=settings.n, n_peers=settings.n_peers, concurrency=concurrency, trials=trials,
                          drains=drains)
