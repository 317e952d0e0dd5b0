"""5. Memory under backlog: the RSS of one email-service (CONCURRENCY=16, smtp-sink -w 1, so it barely drains)
with `big` messages waiting in its queue against 1,000 waiting; the two backlogs sit in separate vhosts, filled
once, and each round samples both for 3 s after start-up. Flat means the consumer holds only its prefetch.
"""

from __future__ import annotations

import asyncio
import time

from tests.support.amqp import declare_topology

from ..broker import Broker, vhost_url
from ..contenders.base import fill
from ..contenders.ours import EmailService
from ..messages import backlog_events
from ..monitor import MB, TreeMonitor
from ..ratios import median
from ..results import MemoryResult, RssRun, Settings
from ..sinks import SmtpSink
from ..testbed import Testbed, log, wait_ready

SMALL = 1000
QUEUE = "email.welcome"


def sample(bed: Testbed, sink: SmtpSink, backlog: int, broker: Broker, round_: int) -> RssRun:
    proc, port = EmailService(concurrency=16).start_one(bed, sink.port, broker.url)
    try:
        wait_ready(port, 30, "email-service")
        time.sleep(1.5)  # past start-up: connection, topology, prefetch filled
        monitor = TreeMonitor([proc.pid], interval=0.2)
        monitor.start()
        time.sleep(3.0)
        monitor.stop()
        waiting = broker.depth(QUEUE)[0]
    finally:
        bed.processes.stop(proc, timeout=10)
    return RssRun(backlog=backlog, round=round_, waiting=waiting, rss_mb_peak=round(monitor.peak_rss / MB, 1),
                  rss_mb_median=round(median(monitor.samples) / MB, 1))


def run(bed: Testbed, settings: Settings) -> MemoryResult:
    assert bed.broker is not None
    big = settings.backlog
    vhost_big = bed.add_vhost("backlog")
    asyncio.run(declare_topology(vhost_url(vhost_big)))
    broker_big = Broker(vhost_big)
    sink = SmtpSink(bed.processes, delay_seconds=1)
    runs = []
    try:
        t = time.monotonic()
        fill(EmailService(), bed.broker, SMALL)
        broker_big.purge(QUEUE)
        published = 0
        while published < big:
            published += broker_big.publish("signups", "user.signed_up", backlog_events(min(10000, big - published)))
        broker_big.wait_depth(QUEUE, big, timeout=180)
        fill_seconds = round(time.monotonic() - t, 1)
        log(f"5. memory: {big} messages waiting in {vhost_big} (filled in {fill_seconds} s), {SMALL} in "
            f"{bed.broker.vhost}; smtp-sink -w 1 (1 s per mail), CONCURRENCY=16")
        for round_ in range(settings.runs):
            for backlog, broker in ((SMALL, bed.broker), (big, broker_big)):
                row = sample(bed, sink, backlog, broker, round_)
                runs.append(row)
                log(f"5. memory run {round_ + 1}/{settings.runs}: {row.waiting} waiting: "
                    f"RSS {row.rss_mb_peak} MB (peak)")
    finally:
        sink.stop()
        broker_big.close()
        bed.delete_vhost(vhost_big)
        bed.broker.purge(QUEUE)
    return MemoryResult(small=SMALL, big=big, fill_seconds=fill_seconds, runs=runs)
