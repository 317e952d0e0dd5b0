"""The targets the benchmarks were written to check, judged on one run's results.

Invariant: a goal is met or missed on a ratio taken within each round (median over the rounds), never on two
medians divided; the medians appear beside it as figures only. Only sections that ran have goals.
"""

from __future__ import annotations

from dataclasses import dataclass

from .results import BASELINE, ProviderResult, Results, RttResult, ScalingConfig


@dataclass(frozen=True)
class Goal:
    goal: str
    figures: str  # the medians behind it
    measured: str  # the ratio within a round, median over the rounds
    met: bool


def goals(results: Results) -> list[Goal]:
    s = results.sections
    out: list[Goal] = []
    if s.consumer:
        c = s.consumer
        for p in (1, 2):
            def rate(kind: str, p: int = p) -> str:
                return f"{c.median(kind, p, 'mails_per_s'):.0f}"

            where = f"consumer, {p} process{'es' if p > 1 else ''}"
            info_celery = c.ratio("ours-info", "celery", p)
            out.append(Goal(
                f"{where}: >= 3x Celery's mails/s",
                f"ours {rate('ours-info')} (info) / {rate('ours-warning')} (warning) mails/s; Celery {rate('celery')}, "
                f"Dramatiq {rate('dramatiq')}",
                f"{info_celery:.2f}x ({c.ratio('ours-warning', 'celery', p):.2f}x at warning; "
                f"by CPU per mail {c.ratio('ours-info', 'celery', p, by_cpu=True):.1f}x)", info_celery >= 3))
            info_ceiling = c.ratio("ours-info", "ceiling", p)
            out.append(Goal(
                f"{where}: >= 85% of the ceiling",
                f"ours {rate('ours-info')} / {rate('ours-warning')}; ceiling {rate('ceiling')} mails/s",
                f"{info_ceiling:.0%} (rounds {_span(c.ratios('ours-info', 'ceiling', p), '.0%')}; "
                f"{c.ratio('ours-warning', 'ceiling', p):.0%} at warning; by CPU per mail "
                f"{c.ratio('ours-info', 'ceiling', p, by_cpu=True):.0%} / "
                f"{c.ratio('ours-warning', 'ceiling', p, by_cpu=True):.0%})", info_ceiling >= 0.85))
    if s.producer:
        pr = s.producer
        rps, p99 = pr.ratio("ours", "ceiling", "rps"), pr.ratio("ours", "ceiling", "p99_ms")
        out.append(Goal(
            "producer: >= 85% of the ceiling app's req/s",
            f"ours {pr.median('ours', 'rps'):.0f} req/s; ceiling {pr.median('ceiling', 'rps'):.0f}; "
            f"Celery endpoint {pr.median('celery', 'rps'):.0f}",
            f"{rps:.0%} (rounds {_span(pr.ratios('ours', 'ceiling', 'rps'), '.0%')}; by CPU per request "
            f"{pr.ratio('ceiling', 'ours', 'cpu_s_per_1000'):.0%})", rps >= 0.85))
        out.append(Goal(
            "producer: p99 <= 1.5x the ceiling's p99",
            f"p99 ours {pr.median('ours', 'p99_ms'):.0f} ms, ceiling {pr.median('ceiling', 'p99_ms'):.0f} ms "
            f"(p50 {pr.median('ours', 'p50_ms'):.0f} / {pr.median('ceiling', 'p50_ms'):.0f} ms)",
            f"{p99:.2f}x (rounds {_span(pr.ratios('ours', 'ceiling', 'p99_ms'), '.2f')}x)", p99 <= 1.5))
    if s.e2e:
        e = s.e2e
        p99 = e.median("ours", "p99_ms")
        out.append(Goal(
            f"end to end p99 < 50 ms at half load ({e.rate}/s)",
            f"ours p50 {e.median('ours', 'p50_ms'):.1f} ms, p99 {p99:.1f} ms; ceiling pair p50 "
            f"{e.median('ceiling', 'p50_ms'):.1f}, p99 {e.median('ceiling', 'p99_ms'):.1f} ms",
            f"{p99:.1f} ms ({e.ratio('ours', 'ceiling'):.2f}x the ceiling pair's p99)", p99 < 50))
    if s.scaling:
        sc = s.scaling
        one = sc.median(BASELINE)
        rates = " / ".join(f"{sc.median(ScalingConfig(k, 1)):.1f}" for k in (2, 4, 8))
        eff8 = sc.efficiency(ScalingConfig(8, 1))
        out.append(Goal("scaling efficiency >= 90% at 8 processes (50 ms SMTP)",
                        f"1/2/4/8 processes: {one:.1f} / {rates} mails/s", f"{eff8:.0%}", eff8 >= 0.9))
        for config in (c for c in sc.configs() if c.concurrency > 1):
            speedup = sc.efficiency(config)
            out.append(Goal(f"{config.label}: >= 12x CONCURRENCY=1", f"{sc.median(config):.1f} vs {one:.1f} mails/s",
                            f"{speedup:.1f}x", speedup >= 12))
    if s.memory:
        m = s.memory
        ratio = m.ratio()
        out.append(Goal(f"RSS flat with {m.median(m.big, 'waiting'):,} waiting vs {m.small:,} (within 10%)",
                        f"{m.median(m.big)} MB vs {m.median(m.small)} MB", f"{ratio:.3f}x", ratio <= 1.10))
    if s.provider:
        out += _provider_goals(s.provider)
    if s.rtt:
        out.append(_pipelining_goal(s.rtt))
    rss = ([s.memory.median(s.memory.big)] if s.memory else []) + (
        [s.consumer.median("ours-info", 1, "peak_rss_mb")] if s.consumer else [])
    if rss:
        out.append(Goal("RSS < 100 MB per email-service process", "highest median peak RSS of one email-service",
                        f"{max(rss)} MB", max(rss) < 100))
    return out


def _span(values: list[float], spec: str) -> str:
    """The lowest and highest of a ratio's rounds, "0.79-0.95" style in `spec`'s format."""
    return f"{format(min(values), spec)}-{format(max(values), spec)}"


def _provider_goals(pr: ProviderResult) -> list[Goal]:
    """Ours, in both modes: everything delivered within 1.3x the ideal drain, and fewer dead letters (or as few,
    none) and a shorter drain than both peers. On medians over the rounds: the section runs one round by default."""
    out: list[Goal] = []
    peers = [c for c in ("celery", "dramatiq") if c in pr.contenders()]
    for ours in (c for c in ("ours", "ours-budget") if c in pr.contenders()):
        delivered, backlog = pr.median(ours, "delivered"), pr.median(ours, "backlog")
        drain, ideal = pr.median(ours, "drain_s"), pr.median(ours, "ideal_s")
        out.append(Goal(f"provider limits, {ours}: every signup delivered, drain <= 1.3x ideal",
                        f"{delivered:.0f}/{backlog:.0f} delivered, {pr.median(ours, 'dead_lettered'):.0f} dead, "
                        f"{pr.median(ours, 'throttling_replies'):.0f} throttling replies",
                        f"{drain:.1f} s = {drain / ideal:.2f}x ideal {ideal:.1f} s",
                        delivered == backlog and drain <= 1.3 * ideal))
        if peers:
            dead, drains = pr.median(ours, "dead_lettered"), {p: _finished_drain(pr, p) for p in peers}
            deads = {p: pr.median(p, "dead_lettered") for p in peers}
            out.append(Goal(f"provider limits, {ours}: fewer dead letters and a shorter drain than Celery and "
                            "Dramatiq",
                            f"dead: ours {dead:.0f}, " + ", ".join(f"{p} {deads[p]:.0f}" for p in peers)
                            + f"; drain: ours {drain:.1f} s, " + ", ".join(f"{p} {drains[p]:.1f} s" for p in peers),
                            f"dead {dead:.0f} vs min {min(deads.values()):.0f}; drain {drain:.1f} vs min "
                            f"{min(drains.values()):.1f} s",
                            all(dead < deads[p] or dead == deads[p] == 0 for p in peers)
                            and all(_finished_drain(pr, ours) < drains[p] for p in peers)))
    return out


def _pipelining_goal(lat: RttResult) -> Goal:
    rtt = max(lat.rtts_ms)
    ratio = lat.ratio("ours-pipelining", "ours-sequential", rtt)
    spread = lat.ratios("ours-pipelining", "ours-sequential", rtt)
    figures = "; ".join(
        f"{r:g} ms: " + ", ".join(f"{c} {lat.median(c, r) / lat.connections:.1f}" for c in lat.contenders())
        for r in lat.rtts_ms)
    return Goal(f"SMTP at {rtt:g} ms RTT, {lat.connections} connections: PIPELINING >= 1.6x mails/s per connection "
                "against the same service without it", f"mails/s per connection: {figures}",
                f"{ratio:.2f}x (rounds {_span(spread, '.2f')}x; at {min(lat.rtts_ms):g} ms: "
                f"{lat.ratio('ours-pipelining', 'ours-sequential', min(lat.rtts_ms)):.2f}x)", ratio >= 1.6)


def _finished_drain(pr: ProviderResult, contender: str) -> float:
    """The median drain time, or infinity when a drain was stopped at the deadline (it did not finish)."""
    if not all(r.drained for r in pr.runs if r.contender == contender):
        return float("inf")
    return pr.median(contender, "drain_s")
