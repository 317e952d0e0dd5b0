"""Prometheus metrics of the email service. Base units, fixed label sets initialised at start, no per-user labels."""

from __future__ import annotations

import enum

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from .errors import Stage
from .wire import DeadLetterReason

# No `_created` series: one more series per counter and histogram that no dashboard or alert uses.
disable_created_metrics()

OUTCOMES = ("sent", "retried", "deferred", "dead_lettered", "duplicate")
BUDGET_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0)
SEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# End to end includes time queued and time waiting in retry tiers: milliseconds up to hours.
END_TO_END_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                      14400.0)

# occurred_at up to this far ahead of our clock is clock skew (the age counts as 0); further ahead, implausible.
CLOCK_SKEW_SECONDS = 60.0


class EndToEndExclusion(enum.StrEnum):
    """Why a sent mail's age is not in email_end_to_end_seconds (the `reason` of email_end_to_end_excluded_total):
    the histogram, and the latency alert on it, measure first deliveries of events that are as old as a mail of
    this service can legitimately be."""

    REPLAYED = "replayed"  # moved back from the dead-letter queue (x-replay-count): its age is the operator's
    TOO_OLD = "too_old"  # older than the longest a delivery can take (retry delays and the delivery deadline)
    IN_FUTURE = "in_future"  # occurred_at more than CLOCK_SKEW_SECONDS ahead of this process's clock


def end_to_end_exclusion(age: float, *, replayed: bool, longest: float) -> EndToEndExclusion | None:
    """Whether a sent mail's age (now - occurred_at, seconds) stays out of email_end_to_end_seconds, and why."""
    if replayed:
        return EndToEndExclusion.REPLAYED
    if age < -CLOCK_SKEW_SECONDS:
        return EndToEndExclusion.IN_FUTURE
    if age > longest:
        return EndToEndExclusion.TOO_OLD
    return None


class EmailMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages = Counter("email_messages", "Messages handled, by outcome.", ["outcome"], registry=registry)
        self.dead_letters = Counter("email_dead_letters", "Messages dead-lettered, by reason.", ["reason"],
                                    registry=registry)
        self.send_seconds = Histogram("email_send_seconds", "Duration of the SMTP exchange for one mail.",
                                      buckets=SEND_BUCKETS, registry=registry)
        self.end_to_end_seconds = Histogram(
            "email_end_to_end_seconds", "Time from the event's occurred_at until the SMTP server accepted the mail "
            "(first deliveries with a plausible age; see email_end_to_end_excluded).",
            buckets=END_TO_END_BUCKETS, registry=registry)
        self.end_to_end_excluded = Counter(
            "email_end_to_end_excluded", "Sent mails left out of email_end_to_end_seconds, by reason.", ["reason"],
            registry=registry)
        self.in_progress = Gauge("email_in_progress", "Messages being handled right now.", registry=registry)
        self.consumer_up = Gauge("email_consumer_up", "1 while the consumer is registered with the broker.",
                                 registry=registry)
        self.consumer_prefetch = Gauge(
            "email_consumer_prefetch", "Messages RabbitMQ may hand this process unacked: CONCURRENCY, or the SMTP "
            "concurrency limit while the provider throttles.", registry=registry)
        self.smtp_pool_size = Gauge("email_smtp_pool_size", "Configured maximum of SMTP connections.",
                                    registry=registry)
        self.smtp_connections_open = Gauge("email_smtp_connections_open", "SMTP connections open.",
                                           registry=registry)
        self.smtp_connections_in_use = Gauge("email_smtp_connections_in_use", "SMTP connections sending right now.",
                                             registry=registry)
        # Provider limits (throttle.py, budget.py)
        self.smtp_throttled = Counter("email_smtp_throttled", "Throttling replies of the SMTP server, by stage.",
                                      ["stage"], registry=registry)
        self.smtp_concurrency_limit = Gauge(
            "email_smtp_concurrency_limit", "SMTP exchanges this process runs at once now (lowered on throttling).",
            registry=registry)
        self.budget_wait_seconds = Histogram(
            "email_send_budget_wait_seconds", "Time a mail waited in this process for a slot, the send budget "
            "or a connection.", buckets=BUDGET_WAIT_BUCKETS, registry=registry)
        self.budget_rate = Gauge("email_send_budget_rate", "Configured SEND_RATE_LIMIT, mails per second for the "
                                 "whole deployment (0: none).", registry=registry)
        self.budget_connections = Gauge("email_send_budget_connections", "Configured SMTP_MAX_CONNECTIONS for the "
                                        "whole deployment (0: none).", registry=registry)
        self.budget_shared = Gauge("email_send_budget_shared", "1 while the send budget is shared through Redis, "
                                   "0 while this process goes on with its own share (Redis unreachable).",
                                   registry=registry)
        for stage in Stage:
            self.smtp_throttled.labels(stage.value)
        for outcome in OUTCOMES:
            self.messages.labels(outcome)
        for reason in DeadLetterReason:
            self.dead_letters.labels(reason.value)
        for exclusion in EndToEndExclusion:
            self.end_to_end_excluded.labels(exclusion.value)
        # The delivery record (status.py): writes that failed (the mail went on), and replays from the DLQ.
        self.status_write_failures = Counter(
            "email_status_write_failures", "Delivery-record writes to Redis that failed; the mail went on without "
            "them.", registry=registry)
        self.replayed = Counter(
            "email_replayed_messages", "Messages received that `email-service dlq replay` had moved back from the "
            "dead-letter queue (first delivery after each replay).", registry=registry)
        # The mail itself: events whose locale has no template and got the default locale's.
        self.template_fallbacks = Counter(
            "email_template_fallbacks", "Mails rendered with the default locale's template because the event's "
            "locale has none.", registry=registry)
        # The standard process_* and python_* series, as in the default registry.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)

    def observe_end_to_end(self, age: float, *, replayed: bool, longest: float) -> None:
        """A sent mail's age into email_end_to_end_seconds, or counted out of it with the reason."""
        exclusion = end_to_end_exclusion(age, replayed=replayed, longest=longest)
        if exclusion is None:
            self.end_to_end_seconds.observe(max(0.0, age))
        else:
            self.end_to_end_excluded.labels(exclusion.value).inc()
