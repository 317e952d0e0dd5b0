"""The one way the benchmarks compare contenders: a ratio within each round, then the median of those ratios.

Invariant: two figures are only ever divided when they come from the same round (every contender ran once per
round, interleaved: A B C, A B C, ...), so the noise of a shared machine in one round cancels instead of landing
on one contender; the median over the rounds then discards one odd round. Medians of single figures are for
the tables; a goal is judged on `paired_ratio`.

Pure: no processes, no network; the unit tests and the report import it without the bench's venv.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any


def median(values: Iterable[float | None]) -> Any:
    """The median of the values that were measured (None: not measured in that round); None if there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def per_round(rows: Iterable[Any], value: str, **match: object) -> dict[int, float]:
    """{round: row.<value>} for the rows whose attributes equal `match` (one row per round expected)."""
    out: dict[int, float] = {}
    for row in rows:
        if all(getattr(row, name) == wanted for name, wanted in match.items()):
            if row.round in out:
                raise ValueError(f"two rows for round {row.round} matching {match}")
            out[row.round] = getattr(row, value)
    return out


def paired_ratio(numerator: Mapping[int, float], denominator: Mapping[int, float]) -> float:
    """Median over the rounds both sides have of numerator[r] / denominator[r], rounded to 3 places."""
    rounds = sorted(numerator.keys() & denominator.keys())
    if not rounds:
        raise ValueError("no round has both figures of the ratio")
    return round(statistics.median(numerator[r] / denominator[r] for r in rounds), 3)


def round_ratios(numerator: Mapping[int, float], denominator: Mapping[int, float]) -> list[float]:
    """numerator[r] / denominator[r] for every round both sides have, in round order: the spread behind
    `paired_ratio`."""
    return [round(numerator[r] / denominator[r], 3) for r in sorted(numerator.keys() & denominator.keys())]


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of the values, linearly interpolated between the closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
