"""When to retry, how long to wait, and which attempt a delivery is.

Two ways back to the work queue: a failed attempt goes to a delay tier (growing delays, counted against
max_attempts); a throttled mail goes to the deferral queue (one short delay, not counted, bounded in time by
the delivery deadline instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .wire import ATTEMPT_NUMBER_HEADER, DEFERRED_SINCE_HEADER, LEGACY_ATTEMPT_NUMBER_HEADER, header_text

MAX_ATTEMPT_NUMBER = 1_000_000  # a header claiming more is clamped (the number + 1 must still fit in an AMQP long)


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


@dataclass(frozen=True)
class RetryPolicy:
    """Growing delays, one RabbitMQ delay queue per tier; after max_attempts the message is dead-lettered."""

    max_attempts: int
    delays: tuple[float, ...]
    queue: str = "email.welcome"
    defer_delay: float = 2.0
    deadline_seconds: float = 2 * 24 * 3600.0

    @property
    def defer_queue(self) -> str:
        return f"{self.queue}.deferred.{_format_seconds(self.defer_delay)}"

    def deadline_passed(self, deferred_since: datetime | None, now: datetime) -> bool:
        return deferred_since is not None and (now - deferred_since).total_seconds() > self.deadline_seconds

    @property
    def longest_delivery_seconds(self) -> float:
        """The longest a mail can take from its event to the SMTP server's acceptance, queueing aside: every retry
        delay of max_attempts, then deferrals until the delivery deadline."""
        return sum(self.delays[self.tier_for(attempt)] for attempt in range(1, self.max_attempts)) \
            + self.deadline_seconds

    def tier_queue(self, tier: int) -> str:
        return f"{self.queue}.retry.{_format_seconds(self.delays[tier])}"

    @property
    def tier_queues(self) -> list[tuple[str, float]]:
        return [(self.tier_queue(i), delay) for i, delay in enumerate(self.delays)]

    def should_retry(self, attempt: int) -> bool:
        return attempt < self.max_attempts

    def tier_for(self, attempt: int) -> int:
        """The delay tier after a failed attempt (1-based): 1 -> first tier, growing, capped at the last tier."""
        return min(attempt, len(self.delays)) - 1


def attempt_of(headers: Mapping[str, object] | None) -> int:
    """The attempt number a delivery carries (under its current or its legacy name); 1 when absent or malformed."""
    headers = headers or {}
    value: Any = headers.get(ATTEMPT_NUMBER_HEADER, headers.get(LEGACY_ATTEMPT_NUMBER_HEADER, 1))
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        attempt = int(value)
    except (TypeError, ValueError, OverflowError):
        return 1
    return min(attempt, MAX_ATTEMPT_NUMBER) if attempt >= 1 else 1


def deferred_since(headers: Mapping[str, object] | None) -> datetime | None:
    """When the provider first throttled this mail (DEFERRED_SINCE_HEADER); None when never, or unreadable."""
    text = header_text((headers or {}).get(DEFERRED_SINCE_HEADER))
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
