"""Markdown from one run's results: tests/bench/RESULTS.md in full, and the short block the README shows.

Invariant: every figure printed here comes from `Results` through its medians and within-round ratios; nothing
is typed in by hand, so the documents change only when results.json does. Pure (no processes, no network).
"""

from __future__ import annotations

from .goals import Goal, goals
from .results import (
    ConsumerResult,
    EndToEndResult,
    MemoryResult,
    ProducerResult,
    ProviderResult,
    Results,
    RttResult,
    ScalingResult,
)

CONSUMERS = {"ours-info": "email-service, LOG_LEVEL=info", "ours-warning": "email-service, LOG_LEVEL=warning",
             "celery": "Celery prefork, acks_late, smtplib + EmailMessage",
             "dramatiq": "Dramatiq, 8 threads/process, smtplib + EmailMessage",
             "ceiling": "ceiling: bare aio-pika + aiosmtplib pool 16, pre-rendered"}
CONSUMER_RATIOS = (("ours-info", "celery"), ("ours-info", "dramatiq"), ("ours-info", "ceiling"),
                   ("ours-warning", "celery"), ("ours-warning", "dramatiq"), ("ours-warning", "ceiling"),
                   ("ours-warning", "ours-info"))
PRODUCERS = {"ours": "producer-service (validation, metrics, log line, publish + confirm)",
             "ceiling": "ceiling: Starlette + 1 aio-pika publish with confirm",
             "celery": "Starlette + Celery send_task in the thread pool (confirm_publish)"}
PIPELINES = {"ours": "producer-service + email-service", "ceiling": "ceiling pair"}


def goals_table(rows: list[Goal]) -> list[str]:
    lines = ["| goal | figures (medians) | measured (ratios within a run, median) | met |", "|---|---|---|---|"]
    lines += [f"| {g.goal} | {g.figures} | {g.measured} | {'met' if g.met else 'MISSED'} |" for g in rows]
    return lines


def results_markdown(results: Results) -> str:
    """tests/bench/RESULTS.md: method, versions, every section's table and ratios, the goals."""
    s = results.sections
    lines = ["# welcome-mail benchmarks", "", _provenance(results), "", _code(results), "", _versions(results), ""]
    if s.consumer:
        lines += _consumer(s.consumer)
    if s.producer:
        lines += _producer(s.producer)
    if s.e2e:
        lines += _e2e(s.e2e)
    if s.scaling:
        lines += _scaling(s.scaling)
    if s.memory:
        lines += _memory(s.memory)
    if s.provider:
        lines += _provider(s.provider)
    if s.rtt:
        lines += _rtt(s.rtt)
    lines += ["## Goals", "", *goals_table(goals(results)), ""]
    return "\n".join(lines)


def results_block(results: Results) -> str:
    """What docs/benchmarks.md shows between the bench-table markers (under its "## Results"): RESULTS.md without
    its title, every heading one level down."""
    body = results_markdown(results).split("\n", 2)[2]
    return "\n".join("#" + line if line.startswith("## ") else line for line in body.split("\n"))


def readme_block(results: Results) -> str:
    """What the README shows between the bench-table markers: when and where, the versions, the goals."""
    v, m = results.versions, results.versions["machine"]
    lines = [f"Last run: {results.date} by `make bench`, commit {v['code']['commit']}, {m['nproc']} cores "
             f"({m['cpu_model']}), load average {results.load_average_start[0]:.1f} at the start; medians of "
             f"{results.settings.runs} interleaved runs, every ratio taken within one run. Every figure, version and "
             "per-run value: `tests/bench/RESULTS.md` and `tests/bench/results.json`.", "", _versions(results), ""]
    return "\n".join(lines + goals_table(goals(results))) + "\n"


def _provenance(r: Results) -> str:
    m = r.versions["machine"]
    quick = " A quick run (`--quick`): reduced sizes, figures not comparable." if r.settings.quick else ""
    return (f"Run {r.date} by `make bench` ({r.total_seconds:.0f} s). Machine: {m['nproc']} cores ({m['cpu_model']}), "
            f"{m['memory_gib']} GiB, Debian {m['os']}, kernel {m['kernel']}; shared with other jobs (load average "
            f"{r.load_average_start[0]:.1f} at the start, {r.load_average_end[0]:.1f} at the end). Every figure is the "
            f"median of {r.settings.runs} runs; contenders were interleaved (A B C, A B C, ...) and every ratio is "
            f"taken within one run, then the median of those ratios.{quick}")


def _code(r: Results) -> str:
    code = r.versions["code"]
    dirty = code["uncommitted_service_files"]
    return (f"Code: commit {code['commit']}"
            + (f" with uncommitted changes in {', '.join(x.split()[-1] for x in dirty)}" if dirty else "") + "."
            + (f" {code['note']}" if code.get("note") else ""))


def _versions(r: Results) -> str:
    v = r.versions
    svc, peers = v["services (.venv)"], v["peers (.venv-bench)"]
    return (f"Versions: Python {svc['python']}; RabbitMQ {v['rabbitmq']['version']} ({v['rabbitmq']['platform']}); "
            f"aio-pika {svc['aio-pika']}, aiosmtplib {svc['aiosmtplib']}, uvicorn {svc['uvicorn']}, "
            f"starlette {svc['starlette']}, uvloop {svc['uvloop']}, httptools {svc['httptools']}; "
            f"Celery {peers['celery']} (kombu {peers['kombu']}), Dramatiq {peers['dramatiq']} (pika {peers['pika']}); "
            f"{v['tools']['wrk']}; Postfix smtp-sink {v['tools']['postfix (smtp-sink)']}.")


def _consumer(c: ConsumerResult) -> list[str]:
    trials = ", ".join(f"{t.concurrency}: {t.drain.mails_per_s}/s" for t in c.trials)
    picked = f" (picked from 8/16/32: {trials})" if c.trials else ""
    lines = [f"## 1. Consumer: drain queued signups into smtp-sink ({c.n_ours:,} per run for the email-service and "
             f"the ceiling, {c.n_peers:,} for Celery and Dramatiq)", "",
             f"Ours: `email-service run`, CONCURRENCY={c.concurrency}{picked}, SMTP_POOL_SIZE default "
             "(= CONCURRENCY), SMTP_SECURITY=none.", "",
             "| contender | processes | mails/s | CPU s / 1,000 mails | peak RSS (MB, all processes) |",
             "|---|---|---|---|---|"]
    for p in (1, 2):
        for kind, label in CONSUMERS.items():
            lines.append(f"| {label} | {p} | {c.median(kind, p, 'mails_per_s'):.0f} | "
                         f"{c.median(kind, p, 'cpu_s_per_1000'):.2f} | {c.median(kind, p, 'peak_rss_mb'):.0f} |")
    lines += ["", "Ratios, each taken within one run, median over the runs. *mails/s* is the measured throughput "
              "ratio; *CPU* is the inverse ratio of CPU seconds per mail (the capacity ratio if both were "
              "CPU-bound on equal cores), which the other jobs on this shared machine disturb far less.", "",
              "| ratio | 1 process: mails/s | 1 process: CPU | 2 processes: mails/s | 2 processes: CPU |",
              "|---|---|---|---|---|"]
    for a, b in CONSUMER_RATIOS:
        cells = [f"{c.ratio(a, b, p, by_cpu=cpu):.2f}" for p in (1, 2) for cpu in (False, True)]
        lines.append(f"| {a}/{b} | {' | '.join(cells)} |")
    return lines + [""]


def _producer(p: ProducerResult) -> list[str]:
    lines = ["## 2. Producer: POST /v1/signups, 64 connections, 1 worker process", "",
             f"`{p.wrk_command}` after a 1 s warm-up; the queue is purged between runs.", "",
             "| contender | req/s | p50 ms | p99 ms | CPU s / 1,000 requests (server) | non-2xx |",
             "|---|---|---|---|---|---|"]
    for kind, label in PRODUCERS.items():
        lines.append(f"| {label} | {p.median(kind, 'rps'):.0f} | {p.median(kind, 'p50_ms'):.1f} | "
                     f"{p.median(kind, 'p99_ms'):.1f} | {p.median(kind, 'cpu_s_per_1000'):.2f} | {p.non_2xx(kind)} |")
    return lines + ["", f"Ratios (same run): ours/ceiling req/s {p.ratio('ours', 'ceiling', 'rps'):.2f} (from CPU per "
                    f"request: {p.ratio('ceiling', 'ours', 'cpu_s_per_1000'):.2f}), p99 "
                    f"{p.ratio('ours', 'ceiling', 'p99_ms'):.2f}x; ours/Celery req/s "
                    f"{p.ratio('ours', 'celery', 'rps'):.2f}, p99 {p.ratio('ours', 'celery', 'p99_ms'):.2f}x.", ""]


def _e2e(e: EndToEndResult) -> list[str]:
    cal = e.calibration
    lines = [f"## 3. End to end at half load: {e.rate} signups/s for {e.seconds:g} s", "",
             "Pipeline maximum measured first with everything running (wrk on the producer while the email-service "
             f"drains): producer {cal.producer_rps_under_wrk:.0f} req/s, mails meanwhile "
             f"{cal.mails_per_s_meanwhile:.0f}/s; the load is half of the lower. Time from the POST (paced open-loop "
             "generator, tests/bench/loadgen.py) until the SMTP server accepted the mail (tests/bench/sink.py, by "
             f"Message-ID = event id). Ours: producer-service + 1 email-service (CONCURRENCY={e.concurrency}), both "
             "LOG_LEVEL=info; alternately, at the same rate, the ceiling pair (ceiling_app.py + ceiling_consumer.py).",
             "",
             "| pipeline | POST -> accepted p50 / p99 / max (ms) | POST -> 202 p50 / p99 | 202 -> accepted p50 / p99 "
             "| achieved rate/s |", "|---|---|---|---|---|"]
    for kind, label in PIPELINES.items():
        def ms(*values: str, kind: str = kind) -> str:
            return " / ".join(f"{e.median(kind, v):.1f}" for v in values)

        lines.append(f"| {label} | {ms('p50_ms', 'p99_ms', 'max_ms')} | {ms('http_p50_ms', 'http_p99_ms')} | "
                     f"{ms('after_202_p50_ms', 'after_202_p99_ms')} | {e.median(kind, 'achieved_rate'):.0f} |")
    return lines + ["", f"Ours/ceiling p99 (same run): {e.ratio('ours', 'ceiling'):.2f}x. Cross-check from the "
                    "email-service's own histogram email_end_to_end_seconds (occurred_at -> accepted): p99 "
                    f"~{e.median('ours', 'histogram_p99_ms'):.0f} ms (interpolated in 25-50-100 ms buckets), "
                    f"{e.median('ours', 'histogram_share_within_50ms'):.1%} within 50 ms.", ""]


def _scaling(sc: ScalingResult) -> list[str]:
    lines = [f"## 4. Horizontal scaling: SMTP server answers each mail after {sc.smtp_delay_s * 1000:.0f} ms", "",
             "| configuration | mails/s | efficiency (N procs: rate / (N x rate at 1)); speedup for CONCURRENCY=16 |",
             "|---|---|---|"]
    for config in sc.configs():
        eff = sc.efficiency(config)
        shown = f"{eff:.0%}" if config.concurrency == 1 else f"{eff:.1f}x"
        lines.append(f"| {config.label} | {sc.median(config):.1f} | {shown} |")
    return lines + [""]


def _memory(m: MemoryResult) -> list[str]:
    return ["## 5. Memory under backlog (one email-service, CONCURRENCY=16, smtp-sink -w 1)", "",
            "| messages waiting | RSS (MB, peak over 3 s) |", "|---|---|",
            f"| {m.small:,} | {m.median(m.small):.1f} |", f"| {m.median(m.big, 'waiting'):,} | {m.median(m.big):.1f} |",
            "", f"Ratio {m.ratio():.3f}.", ""]


PROVIDER_CONTENDERS = {"ours": "email-service, default settings, no budget",
                       "ours-budget": "email-service, SEND_RATE_LIMIT + SMTP_MAX_CONNECTIONS = the provider's",
                       "celery": "Celery, rate_limit = rate / 4 nodes, autoretry with backoff (3)",
                       "dramatiq": "Dramatiq, Redis WindowRateLimiter + ConcurrentRateLimiter, 3 retries"}


def _provider(pr: ProviderResult) -> list[str]:
    lines = [f"## 6. Provider limits: {pr.processes} processes each into a provider allowing {pr.rate:g} mails/s and "
             f"{pr.connections} connections (SES replies: 454 at DATA, 421 at the greeting)", "",
             f"Medians over {len({r.round for r in pr.runs})} round(s); a drain stops at {pr.deadline_s:.0f} s. "
             "*dead*: ours email.welcome.dlq, Dramatiq default.XQ, Celery tasks failed for good; *left*: neither "
             "when the drain stopped.", "",
             "| contender | delivered | dead | left | duplicates | throttling replies | most connections | drain (s) "
             "| ideal (s) | note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in pr.contenders():
        notes = "; ".join(sorted({r.note for r in pr.runs if r.contender == c and r.note}))
        cells = [f"{pr.median(c, v):.0f}" for v in ("delivered", "dead_lettered", "left", "duplicates",
                                                    "throttling_replies", "max_connections")]
        lines.append(f"| {PROVIDER_CONTENDERS.get(c, c)} | {' | '.join(cells)} | {pr.median(c, 'drain_s'):.1f} | "
                     f"{pr.median(c, 'ideal_s'):.1f} | {notes} |")
    return lines + [""]


RTT_CONTENDERS = {"ours-pipelining": "email-service, SMTP_PIPELINING=true (default)",
                      "ours-sequential": "email-service, SMTP_PIPELINING=false",
                      "ceiling": "ceiling: bare aio-pika + aiosmtplib pool, one command at a time",
                      "celery": "Celery prefork, 1 connection per mail per process"}


def _rtt(lat: RttResult) -> list[str]:
    lines = [f"## 7. SMTP over latency: smtp-sink behind a proxy adding {' and '.join(f'{r:g}' for r in lat.rtts_ms)} "
             f"ms round-trip time, {lat.connections} SMTP connections", "",
             "Ours: one process, CONCURRENCY=16, SMTP_POOL_SIZE=3; the ceiling: BENCH_POOL=3; Celery: 3 prefork "
             "processes. smtp-sink advertises PIPELINING.", "",
             "| contender | RTT (ms) | mails/s | per connection | CPU s / 1,000 mails |", "|---|---|---|---|---|"]
    for rtt in lat.rtts_ms:
        for c in lat.contenders():
            rate = lat.median(c, rtt)
            lines.append(f"| {RTT_CONTENDERS.get(c, c)} | {rtt:g} | {rate:.1f} | {rate / lat.connections:.1f} | "
                         f"{lat.median(c, rtt, 'cpu_s_per_1000'):.2f} |")
    ratios = "; ".join(f"{rtt:g} ms: pipelining/sequential "
                       f"{lat.ratio('ours-pipelining', 'ours-sequential', rtt):.2f}x, "
                       f"ours/ceiling {lat.ratio('ours-pipelining', 'ceiling', rtt):.2f}x" for rtt in lat.rtts_ms)
    return lines + ["", f"Ratios of mails/s per connection (same run): {ratios}.", ""]
