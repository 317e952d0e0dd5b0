"""The test-support layer's pure parts: the Prometheus text reader, the readiness probe's arithmetic, free ports.

A reader that misreads makes every test built on it pass or fail for the wrong reason, so it is tested itself.
"""

from __future__ import annotations

import random

import pytest

from tests.support import ports
from tests.support.probes import ReadinessProbe
from tests.support.prometheus import Metrics, histogram_quantile

EXPOSITION = """\
# HELP email_messages_total Messages handled, by outcome.
# TYPE email_messages_total counter
email_messages_total{outcome="sent"} 3.0
email_messages_total{outcome="retried"} 1.0
# HELP email_in_progress Messages being handled.
# TYPE email_in_progress gauge
email_in_progress 2.0
# HELP email_send_seconds SMTP exchange.
# TYPE email_send_seconds histogram
email_send_seconds_bucket{le="0.1"} 2.0
email_send_seconds_bucket{le="0.5"} 4.0
email_send_seconds_bucket{le="+Inf"} 4.0
email_send_seconds_count 4.0
email_send_seconds_sum 0.6
"""


def test_metrics_reader_finds_samples_by_exact_labels() -> None:
    metrics = Metrics.parse(EXPOSITION)
    assert metrics.value("email_messages_total", outcome="sent") == 3.0
    assert metrics.value("email_messages_total", outcome="dead_lettered") is None
    assert metrics.value("email_messages_total") is None  # labels must match exactly
    assert metrics.value("email_in_progress") == 2.0
    assert metrics.by_label("email_messages_total", "outcome") == {"sent": 3.0, "retried": 1.0}


def test_histogram_and_its_quantile() -> None:
    buckets = Metrics.parse(EXPOSITION).histogram("email_send_seconds")
    assert buckets == {0.1: 2.0, 0.5: 4.0, float("inf"): 4.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.3)  # linear inside (0.1, 0.5]
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {1.0: 0.0, float("inf"): 0.0}) is None


def test_probe_down_intervals_run_from_the_first_failure_to_the_next_success() -> None:
    probe = ReadinessProbe("p", "http://unused")
    probe.samples = [(0.0, True), (1.0, False), (1.5, False), (2.0, True), (3.0, False), (4.0, False)]
    assert probe.down_intervals(since=0.0) == [(1.0, 2.0), (3.0, 4.0)]  # the last one still open: up to now
    assert probe.down_seconds(since=0.0) == pytest.approx(2.0)
    assert probe.down_intervals(since=2.5) == [(3.0, 4.0)]
    assert probe.down_intervals(since=0.0, until=3.5) == [(1.0, 2.0), (3.0, 3.5)]  # open at the window's end
    assert not probe.ready and probe.sampled_since(3.5)


class _Scripted(random.Random):
    """randrange answers the given ports in turn."""

    def __init__(self, answers: list[int]) -> None:
        super().__init__()
        self.answers = iter(answers)

    def randrange(self, *_: object) -> int:  # type: ignore[override]
        return next(self.answers)


def test_free_port_never_hands_out_a_fixed_rabbitmq_nodes_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # a killed cluster node gets its distribution port back when it starts again (another worker's server took it)
    reserved = sorted(ports.RESERVED)
    monkeypatch.setattr(ports, "_rng", _Scripted([*reserved, 20123]))
    monkeypatch.setattr(ports, "_handed_out", set())
    assert {25672, 25681, 25682, 25683} <= ports.RESERVED
    assert ports.free_port() == 20123
