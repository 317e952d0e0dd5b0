"""Prometheus metrics of the producer. Base units, fixed label sets initialised at start, no per-user labels."""

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

# No `_created` series: one more series per counter and histogram that no dashboard or alert uses.
disable_created_metrics()


class SignupOutcome(enum.StrEnum):
    """The `outcome` label of producer_signups_total (alerts and the dashboard select on these values)."""

    ACCEPTED = "accepted"  # 202: the broker confirmed the event
    INVALID = "invalid"  # 4xx: the request was refused
    UNAVAILABLE = "unavailable"  # 503: the broker did not take the event (a PublishFailure)


ROUTES = ("/v1/signups", "/healthz", "/readyz", "/metrics", "/openapi.json", "other")
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")

# Publish-until-confirm is milliseconds on a healthy broker; the tail matters up to the publish timeout.
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # The standard process_* and python_* series, as in the default registry.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        self.signups = Counter("producer_signups", "Signup requests by outcome.", ["outcome"], registry=registry)
        self.publish_seconds = Histogram(
            "producer_publish_seconds", "Time from publishing an event until the broker confirmed it.",
            buckets=PUBLISH_BUCKETS, registry=registry)
        self.http_duration = Histogram(
            "producer_http_request_duration_seconds", "HTTP request duration by route template and status class.",
            ["route", "method", "status_class"], buckets=PUBLISH_BUCKETS, registry=registry)
        self.broker_connected = Gauge(
            "producer_broker_connected", "1 while the broker connection and its confirming channel are open.",
            registry=registry)
        self.status_write_failures = Counter(
            "producer_status_write_failures", "`queued` delivery-record writes to Redis that failed or were dropped "
            "(the signup was accepted all the same).", registry=registry)
        for outcome in SignupOutcome:
            self.signups.labels(outcome.value)
        for status_class in STATUS_CLASSES:
            self.http_duration.labels("/v1/signups", "POST", status_class)
        for route in ROUTES[1:]:
            self.http_duration.labels(route, "GET", "2xx")
