"""7. SMTP over real latency: queued signups drained into smtp-sink (which advertises PIPELINING, as Postfix does)
through a FaultProxy that holds every chunk RTT/2 each way, at 10 ms and 40 ms round-trip time, with 3 SMTP
connections (what Microsoft 365 allows per mailbox).

Contenders, one process each unless said: ours with SMTP_PIPELINING on and off (SMTP_POOL_SIZE=3, CONCURRENCY=16);
the ceiling (bare aio-pika + 3 pooled aiosmtplib connections, one command at a time); Celery prefork with 3
processes (a new connection per mail). Dramatiq is left out: it runs 8 threads per process, each with its own
connection, over the cap. Interleaved round by round; the drain is timed as in section 1 (consumer.drain).
"""

from __future__ import annotations

from ..contenders.base import Consumer
from ..contenders.ceiling import CeilingConsumer
from ..contenders.celery import CeleryWorker
from ..contenders.ours import EmailService
from ..results import RttResult, RttRun, Settings
from ..testbed import Testbed, log
from .consumer import drain

CONNECTIONS = 3
RTTS_MS = (10.0, 40.0)


def contenders() -> list[tuple[Consumer, int, float]]:
    """(contender, processes, share of rtt_n it drains: Celery is 4-6x slower, so a quarter)."""
    def ours(on: bool) -> EmailService:
        return EmailService(name=f"ours-{'pipelining' if on else 'sequential'}", concurrency=16,
                            pool_size=CONNECTIONS, overrides={"SMTP_PIPELINING": "true" if on else "false"})

    return [(ours(True), 1, 1.0), (ours(False), 1, 1.0), (CeilingConsumer(pool=CONNECTIONS), 1, 1.0),
            (CeleryWorker(), CONNECTIONS, 0.25)]


def run(bed: Testbed, settings: Settings) -> RttResult:
    runs = []
    for round_ in range(settings.runs):
        for rtt in RTTS_MS:
            for consumer, processes, share in contenders():
                n = max(20, int(settings.rtt_n * share * (2 if rtt < 40 else 1)))  # twice as many at 10 ms
                d = drain(bed, consumer, processes, n, round_, rtt / 1000)
                runs.append(RttRun(contender=d.contender, rtt_ms=rtt, round=round_, connections=CONNECTIONS,
                                       mails=d.measured_mails, mails_per_s=d.mails_per_s,
                                       cpu_s_per_1000=d.cpu_s_per_1000))
                log(f"7. rtt run {round_ + 1}/{settings.runs}: {d.contender} at {rtt:g} ms RTT: "
                    f"{d.mails_per_s} mails/s ({d.mails_per_s / CONNECTIONS:.1f} per connection)")
    return RttResult(connections=CONNECTIONS, rtts_ms=list(RTTS_MS), runs=runs)
