"""6. Provider limits: a backlog drained by 4 processes into a provider that allows `provider_rate` mails/s and
`provider_connections` connections over all of them (tests/support/provider.py, answering as Amazon SES does:
454 at the end of DATA over the rate, 421 at the greeting over the cap).

Contenders, 4 processes each, one fresh provider each: ours with default settings (the service's own retry tiers,
not the suites' fast ones) and without a budget; ours with the budget set to the provider's limits
(SEND_RATE_LIMIT, SMTP_MAX_CONNECTIONS, REDIS_URL to a private redis-server); Celery with `rate_limit` = the
limit / 4 worker nodes; Dramatiq behind its Redis WindowRateLimiter and ConcurrentRateLimiter.

Each drain is timed from every consumer registered until every signup is settled (delivered or dead-lettered), or
until the deadline, whatever happens first; what was left is reported, never waited for. A contender that fails
to start is reported with its error as a note, so one broken contender (say, ours before the budget exists) does
not cost the others' figures.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.support.prometheus import Metrics
from tests.support.provider import SES, ThrottlingSmtpServer
from tests.support.redis_server import PrivateRedis

from ..contenders.base import Consumer, fill
from ..contenders.celery import LimitedCeleryWorkers
from ..contenders.dramatiq import LimitedDramatiqWorker
from ..contenders.ours import EmailService
from ..results import ProviderResult, ProviderRun, Settings
from ..testbed import Testbed, http_status, log, wait_ready

PROCESSES = 4
DLQ = "email.welcome.dlq"
DRAMATIQ_DEAD = "default.XQ"
SERVICE_RETRIES = {"RETRY_DELAYS": None, "MAX_ATTEMPTS": None}  # the service's defaults: 1,5,30,120,600 s; 5


def deadline_for(settings: Settings) -> float:
    """Long enough for ours without a budget to run through its retry tiers (1+5+30+120 s) on a full run."""
    ideal = settings.provider_backlog / settings.provider_rate
    return 60.0 if settings.quick else max(200.0, 6 * ideal)


def run(bed: Testbed, settings: Settings) -> ProviderResult:
    broker = bed.broker
    assert broker is not None
    redis = PrivateRedis(bed.tmp)
    asyncio.run(redis.start())
    failures = bed.tmp / "celery-failures.txt"
    runs: list[ProviderRun] = []
    deadline = deadline_for(settings)
    try:
        for round_ in range(settings.provider_runs):
            budget = {"SEND_RATE_LIMIT": f"{settings.provider_rate:g}",
                      "SMTP_MAX_CONNECTIONS": str(settings.provider_connections), "REDIS_URL": redis.url}
            contenders: list[Consumer] = [
                EmailService(name="ours", overrides=SERVICE_RETRIES),
                EmailService(name="ours-budget", overrides={**SERVICE_RETRIES, **budget}),
                LimitedCeleryWorkers(rate=settings.provider_rate, failures_file=str(failures)),
                LimitedDramatiqWorker(redis_url=redis.url, rate=settings.provider_rate,
                                      connections=settings.provider_connections,
                                      limiter_prefix=f"bench-{uuid.uuid4().hex[:8]}"),
            ]
            for contender in contenders:
                result = drain(bed, settings, contender, round_, deadline, failures)
                runs.append(result)
                log(f"6. provider run {round_ + 1}/{settings.provider_runs}: {result.contender}: "
                    f"{result.delivered}/{result.backlog} delivered, {result.dead_lettered} dead, {result.left} left, "
                    f"{result.throttling_replies} throttling replies, {result.drain_s:.1f} s "
                    f"(ideal {result.ideal_s:.1f} s){' - ' + result.note if result.note else ''}")
    finally:
        redis.stop()
        broker.purge("email.welcome", DLQ, "celery", "default", DRAMATIQ_DEAD)
    return ProviderResult(rate=settings.provider_rate, connections=settings.provider_connections,
                          processes=PROCESSES, deadline_s=deadline, runs=runs)


def dead_letters(bed: Testbed, contender: Consumer, failures: Path) -> int:
    assert bed.broker is not None
    if contender.key.startswith("ours"):
        return bed.broker.depth(DLQ)[0]
    if contender.key == "dramatiq":
        return bed.broker.depth(DRAMATIQ_DEAD)[0]
    return len(failures.read_text().split()) if failures.exists() else 0


def budget_note(contender: Consumer, ports: list[int]) -> str:
    """For ours with a budget: whether the processes report it (email_send_budget_rate > 0)."""
    if not (isinstance(contender, EmailService) and "SEND_RATE_LIMIT" in contender.overrides):
        return ""
    status, body = http_status(f"http://127.0.0.1:{ports[0]}/metrics")
    if status != 200:
        return "metrics did not answer"
    rate = Metrics.parse(body.decode()).value("email_send_budget_rate")
    return "" if rate else "budget configured but not reported (email_send_budget_rate absent or 0)"


def start(bed: Testbed, contender: Consumer, smtp_port: int) -> tuple[list[ServiceProcess], list[int]]:
    if isinstance(contender, EmailService):
        started = [contender.start_one(bed, smtp_port) for _ in range(PROCESSES)]
        for _, port in started:
            wait_ready(port, 60, contender.key)
        return [proc for proc, _ in started], [port for _, port in started]
    return contender.start(bed, PROCESSES, smtp_port), []


def drain(bed: Testbed, settings: Settings, contender: Consumer, round_: int, deadline: float,
          failures: Path) -> ProviderRun:
    broker = bed.broker
    assert broker is not None
    n, ideal = settings.provider_backlog, settings.provider_backlog / settings.provider_rate
    broker.purge(DLQ, DRAMATIQ_DEAD)
    failures.unlink(missing_ok=True)
    provider = ThrottlingSmtpServer(free_port(), rate=settings.provider_rate,
                                    max_connections=settings.provider_connections, personality=SES)
    provider.start()
    procs: list[ServiceProcess] = []
    note, started_at, settled = "", time.monotonic(), False
    try:
        fill(contender, broker, n)
        procs, ports = start(bed, contender, provider.port)
        broker.wait_consumers(contender.queue, contender.consumers_registered(PROCESSES))
        started_at = time.monotonic()
        note = budget_note(contender, ports)
        while time.monotonic() - started_at < deadline:
            delivered = len([e for e in provider.by_event() if e])
            if delivered + dead_letters(bed, contender, failures) >= n:
                settled = True
                break
            time.sleep(0.2)
    except Exception as exc:  # noqa: BLE001 - one contender's failure is reported, the section goes on
        note = f"failed: {type(exc).__name__}: {exc}"[:300]
    finally:
        drain_s = time.monotonic() - started_at
        bed.processes.stop(*procs, timeout=10)
        provider.stop()
    by_event = provider.by_event()
    delivered = len([e for e in by_event if e])
    dead = dead_letters(bed, contender, failures)
    broker.purge(contender.queue)
    return ProviderRun(contender=contender.key, round=round_, backlog=n, delivered=delivered,
                       duplicates=sum(by_event.values()) - len(by_event), dead_lettered=dead,
                       left=max(0, n - delivered - dead), throttling_replies=provider.throttling_replies(),
                       max_connections=provider.max_open_connections, drain_s=round(drain_s, 1),
                       ideal_s=round(ideal, 1), drained=settled, note=note)
