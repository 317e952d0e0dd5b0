"""What email_end_to_end_seconds measures: first deliveries with a plausible age; replays and implausible
occurred_at values are counted apart, so one hand-published old event cannot move the latency alert."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from email_service.metrics import CLOCK_SKEW_SECONDS, EmailMetrics, EndToEndExclusion, end_to_end_exclusion
from email_service.retry import RetryPolicy

POLICY = RetryPolicy(max_attempts=5, delays=(1, 5, 30, 120, 600), deadline_seconds=172800)


def test_the_longest_delivery_is_every_retry_delay_then_the_deadline():
    assert POLICY.longest_delivery_seconds == 1 + 5 + 30 + 120 + 172800  # 4 retries after 5 attempts
    assert RetryPolicy(max_attempts=1, delays=(1,), deadline_seconds=60).longest_delivery_seconds == 60


@pytest.mark.parametrize("age,replayed,expected", [
    (0.2, False, None),
    (-CLOCK_SKEW_SECONDS, False, None),  # clock skew: counted, as 0
    (POLICY.longest_delivery_seconds, False, None),
    (301_717.0, False, EndToEndExclusion.TOO_OLD),  # the hand-published event of issue 17
    (-CLOCK_SKEW_SECONDS - 1, False, EndToEndExclusion.IN_FUTURE),
    (0.2, True, EndToEndExclusion.REPLAYED),
    (301_717.0, True, EndToEndExclusion.REPLAYED),
])
def test_which_ages_stay_out(age, replayed, expected):
    assert end_to_end_exclusion(age, replayed=replayed, longest=POLICY.longest_delivery_seconds) is expected


def test_excluded_ages_add_nothing_to_the_histogram_and_are_counted_by_reason():
    metrics = EmailMetrics(CollectorRegistry())
    registry = metrics.registry
    for age, replayed in [(0.5, False), (-2.0, False), (301_717.0, False), (-3600.0, False), (10.0, True)]:
        metrics.observe_end_to_end(age, replayed=replayed, longest=POLICY.longest_delivery_seconds)
    assert registry.get_sample_value("email_end_to_end_seconds_count") == 2
    assert registry.get_sample_value("email_end_to_end_seconds_sum") == 0.5  # -2 s of skew counts as 0
    for reason in EndToEndExclusion:
        assert registry.get_sample_value("email_end_to_end_excluded_total", {"reason": reason.value}) == 1
