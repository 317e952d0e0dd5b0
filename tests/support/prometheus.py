"""The one reader of Prometheus text expositions in the suites (prometheus_client's own parser underneath).

    metrics = await scrape("http://127.0.0.1:9100/metrics")
    metrics.value("email_messages_total", outcome="sent")   # one sample, exact labels; None when absent
    metrics.by_label("email_messages_total", "outcome")     # {"sent": 3.0, "retried": 1.0, ...}
    metrics.histogram("email_send_seconds")                  # {upper bound: cumulative count}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    import httpx

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Metrics:
    """Every sample of one exposition: {(sample name, sorted labels): value}."""

    samples: dict[tuple[str, Labels], float]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        return cls({(s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(text) for s in family.samples})

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """One value per value of `label` (the samples of `name` that carry it)."""
        return {dict(labels)[label]: value for (sample, labels), value in self.samples.items()
                if sample == name and label in dict(labels)}

    def histogram(self, name: str, **labels: str) -> dict[float, float]:
        """{upper bound: cumulative count} of the `_bucket` samples of histogram `name` with these other labels."""
        buckets: dict[float, float] = {}
        for (sample, sample_labels), value in self.samples.items():
            found = dict(sample_labels)
            bound = found.pop("le", None)
            if sample == f"{name}_bucket" and bound is not None and found == labels:
                buckets[float(bound)] = value
        return dict(sorted(buckets.items()))


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets (linear inside the bucket); None without data."""
    if not buckets or max(buckets.values()) == 0:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


async def scrape(url: str, client: httpx.AsyncClient | None = None, timeout: float = 5.0) -> Metrics:
    """GET `url` and parse it; raises httpx.HTTPError when it does not answer."""
    import httpx  # here, not at the top: the benchmarks parse expositions in a venv without httpx

    if client is not None:
        response = await client.get(url, timeout=timeout)
    else:
        async with httpx.AsyncClient(timeout=timeout) as own:
            response = await own.get(url)
    response.raise_for_status()
    return Metrics.parse(response.text)
