"""Reading a /metrics page: Prometheus text format -> samples, a histogram's buckets, a quantile from them.

The seam for tests/support/prometheus.py: `parse(text)` returns the samples; the rest works on them.
Pure (standard library only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Every sample line of the exposition (comments and blank lines skipped)."""
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not (m := _SAMPLE.match(line)):
            continue
        out.append(Sample(m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def histogram_buckets(samples: list[Sample], name: str) -> dict[float, float]:
    """{upper bound: cumulative count} of the histogram `name` (one series: labels other than le are ignored)."""
    return {float(s.labels["le"]): s.value for s in samples if s.name == f"{name}_bucket" and "le" in s.labels}


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket that holds the q-th observation."""
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return None
    rank = q * items[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in items:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_le, prev_count = le, count
    return None
