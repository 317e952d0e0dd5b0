"""What one benchmark run measured, as typed records, and their form in results.json.

Invariant: the records hold measurements only (one row per contender per round) and the settings they were
taken with; every median and ratio a report shows is computed from them here, through `ratios.py`, so a report
rendered again from results.json shows exactly what the run showed. results.json is `asdict()` of `Results`
(sections under "sections") plus the goals, written for readers and ignored when loading.

Pure: dataclasses and json only, importable without the bench's venv.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field

from .ratios import median, paired_ratio, per_round, round_ratios


@dataclass(frozen=True)
class Settings:
    runs: int = 3  # rounds: every contender runs once per round
    n: int = 4000  # signups per drain for the email-service and the ceiling
    n_peers: int = 1000  # signups per drain for Celery and Dramatiq
    concurrency: int = 0  # email-service CONCURRENCY; 0: try 8/16/32 and keep the fastest
    wrk_seconds: int = 8
    e2e_seconds: float = 6.0
    e2e_max: float = 0.0  # pipeline maximum (req/s) to use instead of measuring it; 0: measure
    scaling_seconds: float = 3.0
    backlog: int = 200_000
    provider_backlog: int = 1200  # signups queued for each contender of the provider-limits section
    provider_rate: float = 40.0  # the throttling provider's mails/s (all connections together)
    provider_connections: int = 8  # the provider's connection cap
    provider_runs: int = 1  # rounds of that section (a drain can take minutes: retries wait up to 120 s)
    rtt_n: int = 300  # signups per drain of the SMTP-over-latency section (a quarter for Celery)
    sections: str = "consumer,producer,e2e,scaling,memory,provider,rtt"
    out: str = "tests/bench"
    quick: bool = False  # a smoke run with reduced sizes: its figures are not comparable


# ------------------------------------------------------------------------------------------- 1. consumer

@dataclass(frozen=True)
class Drain:
    """One contender draining n queued signups into smtp-sink, timed from all consumers registered."""
    contender: str  # ours-info, ours-warning, celery, dramatiq, ceiling
    processes: int
    round: int
    n: int
    measured_mails: int
    seconds: float
    mails_per_s: float
    cpu_s_per_1000: float
    peak_rss_mb: float
    wall_s: float


@dataclass(frozen=True)
class ConcurrencyTrial:
    concurrency: int
    drain: Drain


@dataclass
class ConsumerResult:
    n_ours: int
    n_peers: int
    concurrency: int
    trials: list[ConcurrencyTrial]
    drains: list[Drain]

    def median(self, contender: str, processes: int, value: str) -> float:
        return median(getattr(d, value) for d in self.drains if (d.contender, d.processes) == (contender, processes))

    def ratio(self, a: str, b: str, processes: int, by_cpu: bool = False) -> float:
        """a's mails/s over b's; by_cpu: b's CPU per mail over a's, the capacity ratio if both were CPU-bound on
        equal cores (far less sensitive to the machine's other load)."""
        if by_cpu:
            return paired_ratio(per_round(self.drains, "cpu_s_per_1000", contender=b, processes=processes),
                                per_round(self.drains, "cpu_s_per_1000", contender=a, processes=processes))
        return paired_ratio(per_round(self.drains, "mails_per_s", contender=a, processes=processes),
                            per_round(self.drains, "mails_per_s", contender=b, processes=processes))

    def ratios(self, a: str, b: str, processes: int) -> list[float]:
        """a's mails/s over b's in every round (the spread of `ratio`)."""
        return round_ratios(per_round(self.drains, "mails_per_s", contender=a, processes=processes),
                            per_round(self.drains, "mails_per_s", contender=b, processes=processes))


# ------------------------------------------------------------------------------------------- 2. producer

@dataclass(frozen=True)
class WrkReport:
    """What wrk prints for one measurement."""
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: str


@dataclass(frozen=True)
class WrkRun(WrkReport):
    """One contender's wrk report in one round, with the server's CPU per 1,000 requests."""
    contender: str  # ours, ceiling, celery
    round: int
    cpu_s_per_1000: float


@dataclass
class ProducerResult:
    wrk_command: str
    runs: list[WrkRun]

    def median(self, contender: str, value: str) -> float:
        return median(getattr(r, value) for r in self.runs if r.contender == contender)

    def non_2xx(self, contender: str) -> int:
        return sum(r.non_2xx for r in self.runs if r.contender == contender)

    def ratio(self, a: str, b: str, value: str) -> float:
        return paired_ratio(per_round(self.runs, value, contender=a), per_round(self.runs, value, contender=b))

    def ratios(self, a: str, b: str, value: str) -> list[float]:
        """The same ratio in every round (its spread)."""
        return round_ratios(per_round(self.runs, value, contender=a), per_round(self.runs, value, contender=b))


# ------------------------------------------------------------------------------------------- 3. end to end

@dataclass(frozen=True)
class Calibration:
    producer_rps_under_wrk: float
    mails_per_s_meanwhile: float
    pipeline_max: float


@dataclass(frozen=True)
class LatencyRun:
    """Paced signups of one round: POST -> SMTP accepted per message, matched by Message-ID = event id."""
    contender: str  # ours, ceiling
    round: int
    requests: int
    accepted_202: int
    mails_matched: int
    achieved_rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    http_p50_ms: float
    http_p99_ms: float
    after_202_p50_ms: float
    after_202_p99_ms: float
    generator_late_over_5ms: int
    # From the email-service's own email_end_to_end_seconds histogram (ours only).
    histogram_p50_ms: float | None = None
    histogram_p99_ms: float | None = None
    histogram_share_within_50ms: float | None = None


@dataclass
class EndToEndResult:
    seconds: float
    rate: int
    concurrency: int
    calibration: Calibration
    runs: list[LatencyRun]

    def median(self, contender: str, value: str) -> float:
        return median(getattr(r, value) for r in self.runs if r.contender == contender)

    def ratio(self, a: str, b: str, value: str = "p99_ms") -> float:
        return paired_ratio(per_round(self.runs, value, contender=a), per_round(self.runs, value, contender=b))


# ------------------------------------------------------------------------------------------- 4. scaling

@dataclass(frozen=True)
class ScalingConfig:
    processes: int
    concurrency: int
    pool_size: int | None = None  # SMTP_POOL_SIZE; None: the service's default (= CONCURRENCY)

    @property
    def label(self) -> str:
        text = f"{self.processes} process{'es' if self.processes > 1 else ''} x CONCURRENCY={self.concurrency}"
        if self.concurrency == 1:
            return text
        return text + (" (default pool: = CONCURRENCY)" if self.pool_size is None
                       else f", SMTP_POOL_SIZE={self.pool_size}")


@dataclass(frozen=True)
class ScalingRun:
    config: ScalingConfig
    round: int
    mails_per_s: float


BASELINE = ScalingConfig(1, 1)


@dataclass
class ScalingResult:
    smtp_delay_s: float
    window_s: float
    runs: list[ScalingRun]

    def configs(self) -> list[ScalingConfig]:
        return list(dict.fromkeys(r.config for r in self.runs))

    def median(self, config: ScalingConfig) -> float:
        return median(r.mails_per_s for r in self.runs if r.config == config)

    def efficiency(self, config: ScalingConfig) -> float:
        """With CONCURRENCY=1: rate / (processes x the 1-process rate); otherwise the speedup over it."""
        factor = config.processes if config.concurrency == 1 else 1
        base = per_round(self.runs, "mails_per_s", config=BASELINE)
        return paired_ratio(per_round(self.runs, "mails_per_s", config=config),
                            {r: factor * rate for r, rate in base.items()})


# ------------------------------------------------------------------------------------------- 5. memory

@dataclass(frozen=True)
class RssRun:
    backlog: int  # messages queued before the consumer started
    round: int
    waiting: int  # messages still waiting at the end of the sample
    rss_mb_peak: float
    rss_mb_median: float


@dataclass
class MemoryResult:
    small: int
    big: int
    fill_seconds: float
    runs: list[RssRun]

    def median(self, backlog: int, value: str = "rss_mb_peak") -> float:
        return median(getattr(r, value) for r in self.runs if r.backlog == backlog)

    def ratio(self) -> float:
        return paired_ratio(per_round(self.runs, "rss_mb_peak", backlog=self.big),
                            per_round(self.runs, "rss_mb_peak", backlog=self.small))


# ------------------------------------------------------------------------------------------- 6. provider limits

@dataclass(frozen=True)
class ProviderRun:
    """One contender (4 processes) draining a backlog into a provider that throttles (tests/support/provider.py)."""
    contender: str  # ours, ours-budget, celery, dramatiq
    round: int
    backlog: int
    delivered: int  # distinct signups the provider accepted a mail for
    duplicates: int  # mails beyond the first per signup
    dead_lettered: int  # ours: email.welcome.dlq; Dramatiq: default.XQ; Celery: tasks failed for good
    left: int  # neither delivered nor dead-lettered when the deadline passed
    throttling_replies: int
    max_connections: int  # most connections open at the provider at once (refused ones included)
    drain_s: float  # from every consumer registered until every signup was settled (or the deadline)
    ideal_s: float  # backlog / provider rate
    drained: bool
    note: str = ""  # e.g. that the budget was configured but the service did not report it


@dataclass
class ProviderResult:
    rate: float
    connections: int
    processes: int
    deadline_s: float
    runs: list[ProviderRun]

    def contenders(self) -> list[str]:
        return list(dict.fromkeys(r.contender for r in self.runs))

    def median(self, contender: str, value: str) -> float:
        return median(getattr(r, value) for r in self.runs if r.contender == contender)


# ------------------------------------------------------------------------------------------- 7. SMTP over latency

@dataclass(frozen=True)
class RttRun:
    """One contender draining queued signups into smtp-sink through a proxy that adds `rtt_ms` round-trip time."""
    contender: str  # ours-pipelining, ours-sequential, ceiling, celery
    rtt_ms: float
    round: int
    connections: int  # SMTP connections the contender may hold (ours: SMTP_POOL_SIZE; Celery: worker processes)
    mails: int
    mails_per_s: float
    cpu_s_per_1000: float

    @property
    def per_connection(self) -> float:
        return self.mails_per_s / self.connections


@dataclass
class RttResult:
    connections: int
    rtts_ms: list[float]
    runs: list[RttRun]

    def contenders(self) -> list[str]:
        return list(dict.fromkeys(r.contender for r in self.runs))

    def median(self, contender: str, rtt_ms: float, value: str = "mails_per_s") -> float:
        return median(getattr(r, value) for r in self.runs if (r.contender, r.rtt_ms) == (contender, rtt_ms))

    def ratio(self, a: str, b: str, rtt_ms: float) -> float:
        """a's mails/s per connection over b's, within each round (median over the rounds)."""
        return paired_ratio(per_round(self.runs, "per_connection", contender=a, rtt_ms=rtt_ms),
                            per_round(self.runs, "per_connection", contender=b, rtt_ms=rtt_ms))

    def ratios(self, a: str, b: str, rtt_ms: float) -> list[float]:
        """The same ratio of every round (its spread)."""
        return round_ratios(per_round(self.runs, "per_connection", contender=a, rtt_ms=rtt_ms),
                            per_round(self.runs, "per_connection", contender=b, rtt_ms=rtt_ms))


# ------------------------------------------------------------------------------------------- the run

@dataclass
class Sections:
    consumer: ConsumerResult | None = None
    producer: ProducerResult | None = None
    e2e: EndToEndResult | None = None
    scaling: ScalingResult | None = None
    memory: MemoryResult | None = None
    provider: ProviderResult | None = None
    rtt: RttResult | None = None


@dataclass
class Results:
    date: str
    settings: Settings
    versions: dict  # an inventory for the report: code, machine, services, peers, rabbitmq, tools
    load_average_start: list[float]
    load_average_end: list[float] = field(default_factory=list)
    total_seconds: float = 0.0
    section_seconds: dict[str, float] = field(default_factory=dict)
    sections: Sections = field(default_factory=Sections)


def dump(results: Results, goals: list | None = None) -> str:
    """results.json: the records, plus the goals (derived, for readers) if given."""
    data = dataclasses.asdict(results)
    data["sections"] = {name: value for name, value in data["sections"].items() if value is not None}
    if goals is not None:
        data["goals"] = [dataclasses.asdict(goal) for goal in goals]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def load(text: str) -> Results:
    return _decode(Results, json.loads(text))


def _decode(kind: typing.Any, data: typing.Any) -> typing.Any:
    if data is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(kind) if a is not type(None)]
        return _decode(inner, data)
    if origin is list:
        (item,) = typing.get_args(kind)
        return [_decode(item, x) for x in data]
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: _decode(hints[f.name], data[f.name]) for f in dataclasses.fields(kind)
                       if f.name in data})
    return data
