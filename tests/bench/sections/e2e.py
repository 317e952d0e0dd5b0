"""3. End to end at half load: paced signups from the POST until the SMTP server accepted the mail.

The pipeline's maximum is measured first with everything running (wrk on the producer while the email-service
drains; producer, broker, consumer and sink share the same cores, so it is lower than either side alone); the
load is half of it. Then, round by round, ours (producer-service + one email-service) and the ceiling pair
(ceiling_app.py publishing straight to a quorum queue that ceiling_consumer.py drains) take the same paced load;
each mail is matched to its POST by Message-ID = event id. Ours is cross-checked against the email-service's own
email_end_to_end_seconds histogram (occurred_at -> accepted).
"""

from __future__ import annotations

import contextlib
import time

from tests.support.prometheus import Metrics, histogram_quantile
from tests.support.waits import WaitTimedOut, eventually_sync

from ..contenders.ceiling import CeilingApp, CeilingConsumer
from ..contenders.ours import EmailService, ProducerService
from ..load import paced, wrk
from ..messages import MESSAGE_ID_DOMAIN
from ..ratios import percentile
from ..results import Calibration, EndToEndResult, LatencyRun, Settings
from ..sinks import PySink
from ..testbed import Testbed, http_status, log, wait_ready

CEILING_QUEUE = "e2e.ceiling"
HISTOGRAM = "email_end_to_end_seconds"


def _histogram(metrics_port: int | None) -> dict[float, float]:
    if metrics_port is None:
        return {}
    text = http_status(f"http://127.0.0.1:{metrics_port}/metrics")[1].decode()
    return Metrics.parse(text).histogram(HISTOGRAM)


def _ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) or 0.0, 2)


def measure(bed: Testbed, contender: str, port: int, rate: float, seconds: float, sink: PySink,
            metrics_port: int | None, round_: int) -> LatencyRun:
    sink.command("RESET")
    before = _histogram(metrics_port)
    sent = paced(bed.tmp, port, rate, seconds)
    accepted_ids = [r["event_id"] for r in sent if r["status"] == 202]
    # A mail that never arrives shows as mails_matched < accepted_202, not as a failed run.
    with contextlib.suppress(WaitTimedOut):
        eventually_sync(lambda: sink.count() >= len(accepted_ids), 15, 0.1, what="every accepted signup's mail")
    accepted = sink.command("DUMP")
    after = _histogram(metrics_port)
    total, after_202 = [], []
    for r in sent:
        at = accepted.get(f"{r['event_id']}@{MESSAGE_ID_DOMAIN}") if r["event_id"] else None
        if at is not None:
            total.append((at - r["sent"]) * 1000)
            after_202.append((at - r["answered"]) * 1000)
    http = [(r["answered"] - r["sent"]) * 1000 for r in sent if r["status"] == 202]
    extra = {}
    if metrics_port is not None:
        buckets = {le: after[le] - before.get(le, 0) for le in after}
        count = buckets.get(float("inf"), 0)
        extra = {"histogram_p50_ms": round((histogram_quantile(0.5, buckets) or 0) * 1000, 1),
                 "histogram_p99_ms": round((histogram_quantile(0.99, buckets) or 0) * 1000, 1),
                 "histogram_share_within_50ms": round(buckets.get(0.05, 0) / count, 4) if count else None}
    row = LatencyRun(contender=contender, round=round_, requests=len(sent), accepted_202=len(accepted_ids),
                     mails_matched=len(total), achieved_rate=round(len(sent) / seconds, 1), p50_ms=_ms(total, 0.5),
                     p99_ms=_ms(total, 0.99), max_ms=round(max(total, default=0.0), 2), http_p50_ms=_ms(http, 0.5),
                     http_p99_ms=_ms(http, 0.99), after_202_p50_ms=_ms(after_202, 0.5),
                     after_202_p99_ms=_ms(after_202, 0.99),
                     generator_late_over_5ms=sum(1 for r in sent if r["lag"] > 0.005), **extra)
    log(f"3. e2e run {round_ + 1}: {contender}: p50 {row.p50_ms} ms, p99 {row.p99_ms} ms (POST->202 p99 "
        f"{row.http_p99_ms} ms, 202->accepted p99 {row.after_202_p99_ms} ms; {row.mails_matched}/{row.requests} "
        f"matched; {row.generator_late_over_5ms} sent >5 ms late)")
    return row


def calibrate(port: int, sink: PySink, given_max: float) -> Calibration:
    """The pipeline's maximum: the lower of the producer's rate under wrk and the mails meanwhile."""
    c0, t0 = sink.count(), time.monotonic()
    w = wrk(port, 4)
    c1, t1 = sink.count(), time.monotonic()
    consumed = (c1 - c0) / (t1 - t0)
    maximum = given_max or min(w.rps, consumed)
    return Calibration(producer_rps_under_wrk=w.rps, mails_per_s_meanwhile=round(consumed, 1),
                       pipeline_max=round(maximum, 1))


def run(bed: Testbed, settings: Settings, concurrency: int) -> EndToEndResult:
    broker = bed.broker
    assert broker is not None
    broker.purge("email.welcome")
    broker.ch.queue_declare(CEILING_QUEUE, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    sink = PySink(bed.processes, record=True)
    svc, metrics_port = EmailService("info", concurrency).start_one(bed, sink.port)
    started = [svc]
    try:
        producer, port = ProducerService().start(bed)
        started.append(producer)
        started += CeilingConsumer(queue=CEILING_QUEUE).start(bed, 1, sink.port)
        ceiling_app, ceiling_port = CeilingApp(queue=CEILING_QUEUE).start(bed)
        started.append(ceiling_app)
        wait_ready(metrics_port, 30, "email-service")
        broker.wait_consumers(CEILING_QUEUE, 1, 30)
        calibration = calibrate(port, sink, settings.e2e_max)
        rate = round(calibration.pipeline_max / 2)
        broker.wait_empty("email.welcome", 60)
        time.sleep(1.0)  # let the drain's tail settle before the paced load
        log(f"3. end to end: pipeline maximum {calibration.pipeline_max:.0f}/s (producer under wrk "
            f"{calibration.producer_rps_under_wrk:.0f} req/s, mails meanwhile {calibration.mails_per_s_meanwhile:.0f}"
            f"/s); paced load at {rate}/s, ours and the ceiling pair alternately")
        paced(bed.tmp, port, rate, 2.0)  # warm-ups, discarded
        paced(bed.tmp, ceiling_port, rate, 2.0)
        time.sleep(0.5)
        runs = []
        for round_ in range(settings.runs):
            runs.append(measure(bed, "ours", port, rate, settings.e2e_seconds, sink, metrics_port, round_))
            runs.append(measure(bed, "ceiling", ceiling_port, rate, settings.e2e_seconds, sink, None, round_))
    finally:
        bed.processes.stop(*started, timeout=10)
        sink.stop()
        broker.purge("email.welcome")
        with contextlib.suppress(Exception):
            broker.ch.queue_delete(CEILING_QUEUE)
    return EndToEndResult(seconds=settings.e2e_seconds, rate=rate, concurrency=concurrency, calibration=calibration,
                          runs=runs)
