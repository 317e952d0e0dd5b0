"""Reliability scenarios of the network, not of processes: a broker link that dies without a reset (blackholed),
then heals. Each ends with the suite's invariant (every 202 is exactly one mail or one dead letter; nothing lost;
duplicates within the bound) and reports how long each service took to notice the fault and to serve again.

The links of the producer and of consumer #0 go through a FaultProxy (tests/support/fault_proxy.py); the other
consumers reach the broker directly, so consumer #0's unacked messages must come back to them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.support.probes import http_ok
from tests.support.report import FULL
from tests.support.service_logs import json_lines, times_of
from tests.support.waits import eventually

from .harness import PUBLISH_TIMEOUT_SECONDS, ReliabilityRun, ScenarioConfig
from .invariant import check_invariant
from .test_scenarios import CLIENT_CONCURRENCY, RECOVER_WITHIN, size

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow,
              pytest.mark.timeout(600 if FULL else 180)]

BLACKOUT_SECONDS = size(15, 45)
DETECT_WITHIN = 30  # seconds: both services must say "not ready" by then (the bound)
RETRY_SCHEDULED = "delivery failed, retry scheduled"  # the email-service's log line for a send to be retried


async def went(who: str, run: ReliabilityRun, ready: Callable[[], Awaitable[bool]], up: bool, since: float,
               timeout: float) -> None:
    """Wait (bounded) until `ready()` is `up`; record the seconds since `since` as "<who> detected/recovered"."""

    async def reached() -> bool:
        return await ready() == up

    await eventually(reached, timeout=timeout, interval=0.1,
                     what=f"{who} {'ready again' if up else 'reporting not ready'} (logs in {run.workdir})")
    run.chaos.timings[f"{who} {'recovered' if up else 'detected'}"] = time.monotonic() - since


async def blackhole_broker_links(run: ReliabilityRun) -> None:
    """The producer's and consumer #0's broker links blackholed for BLACKOUT_SECONDS; the links open then stay dead
    after the heal (only new connections get through, as when the node behind a Service is gone)."""
    proxy = run.broker_proxy
    assert proxy is not None
    probes = {"producer": lambda: http_ok(f"http://127.0.0.1:{run.producer_port}/readyz"),
              "consumer #0": lambda: run.fleet.ready(0)}
    await run.until_sent(0.2)
    proxy.blackhole(keep_dead=True)
    cut = time.monotonic()
    # publishes in flight may be stored with their confirm lost (the client retries them); consumer #0's unacked
    # messages are redelivered to the others, and those it had sent go out twice
    run.chaos.record("broker links blackholed", could_duplicate=CLIENT_CONCURRENCY + run.config.concurrency)
    await asyncio.gather(*(went(who, run, ready, False, cut, DETECT_WITHIN) for who, ready in probes.items()))
    await asyncio.sleep(max(0.0, BLACKOUT_SECONDS - (time.monotonic() - cut)))  # the rest of the outage itself
    proxy.heal()
    healed = time.monotonic()
    await asyncio.gather(*(went(who, run, ready, True, healed, RECOVER_WITHIN) for who, ready in probes.items()))


async def latency_everywhere(run: ReliabilityRun) -> None:
    """50 +- 10 ms each way on the producer's and consumer #0's broker links, 100 ms each way on every SMTP link,
    for the whole load; the figure is the mail throughput it leaves."""
    assert run.broker_proxy is not None and run.smtp_proxy is not None
    run.broker_proxy.latency(0.05, jitter=0.01)
    run.smtp_proxy.latency(0.1)
    run.chaos.record("latency broker 50±10 ms, smtp 100 ms")
    await run.load.finished.wait()
    mails = sorted(mail.at for mail in run.smtp.received())
    if len(mails) > 1:
        run.chaos.figures["mails/s"] = f"{(len(mails) - 1) / (mails[-1] - mails[0]):.1f}"


async def test_latency_on_broker_and_smtp_links(scenario, tmp_path):
    # An SMTP session is ~5 round trips (MAIL, RCPT, DATA, the body, and the pool's NOOP/RSET) of 200 ms: ~1 s a
    # mail, so 3 consumers x CONCURRENCY 16 can take ~48 mails/s; the client offers fewer, and everything must
    # arrive. The throughput goes into the table, not into an assertion.
    config = ScenarioConfig("latency (broker 50 ms, smtp 100 ms)", signups=size(200, 1500), rate=size(20, 30),
                            broker_proxy=True, smtp_proxy=True)
    async with scenario(config) as run:
        await run.drive(latency_everywhere)
        outcome = await run.settle()
    check_invariant(outcome, config, tmp_path)
    assert outcome.duplicates == 0  # latency alone must not make anything be sent twice


async def blackhole_smtp_links(run: ReliabilityRun) -> None:
    """Every SMTP link blackholed for a stretch while sessions wait for the reply to their DATA (the server answers
    `smtp_delay` after the data); the links open then stay dead, so each send must time out (SMTP_TIMEOUT_SECONDS),
    be retried, and go out over a new connection of the pool."""
    proxy = run.smtp_proxy
    assert proxy is not None
    await run.until_sent(0.3)
    await eventually(lambda: run.fleet.in_progress(), timeout=20, interval=0.01, what="a send in progress")
    proxy.blackhole(keep_dead=True)
    cut_wall = time.time()
    # the server may have taken the mail whose 250 is lost: every send in flight may go out twice
    run.chaos.record("smtp links blackholed", could_duplicate=run.config.consumers * run.config.concurrency)
    await asyncio.sleep(run.rng.uniform(*size((2.0, 4.0), (5.0, 10.0))))  # the outage itself
    proxy.heal()
    healed = time.monotonic()
    # detected: the first send given up on (SMTP_TIMEOUT_SECONDS) and scheduled for a retry; recovered: the first
    # mail the server accepts after the heal (over a new connection of the pool)
    await eventually(lambda: run.smtp.accepted_since(healed), timeout=RECOVER_WITHIN, interval=0.05,
                     what=f"a mail accepted after the heal (logs in {run.workdir})")
    run.chaos.timings["email-service recovered"] = min(mail.at for mail in run.smtp.accepted_since(healed)) - healed
    retried = times_of(run.fleet.logs, RETRY_SCHEDULED, since=cut_wall)
    if retried:
        run.chaos.timings["email-service detected"] = min(retried) - cut_wall


async def test_smtp_links_blackholed_mid_data(scenario, tmp_path):
    config = ScenarioConfig("smtp links blackholed mid-DATA", signups=size(200, 1000), rate=size(40, 60),
                            smtp_proxy=True, smtp_delay=0.2)
    async with scenario(config) as run:
        await run.drive(blackhole_smtp_links)
        outcome = await run.settle()
        retried = [line for line in json_lines(run.fleet.logs) if line.get("outcome") == "retried"]
    check_invariant(outcome, config, tmp_path)
    assert retried, f"no send was retried: the blackout reached no session (logs in {tmp_path})"


async def test_broker_links_blackholed_then_healed(scenario, tmp_path):
    config = ScenarioConfig("broker links blackholed", signups=size(300, 1500), rate=size(10, 25),
                            broker_proxy=True, heartbeat=size(2, 5), client_attempts=40, smtp_delay=0.05,
                            drain_timeout=180)
    async with scenario(config) as run:
        await run.drive(blackhole_broker_links)
        outcome = await run.settle()
    check_invariant(outcome, config, tmp_path)
    assert outcome.responses_503 > 0, "the blackout never reached a signup"
    # no request hangs: each got its answer (a 503 within PUBLISH_TIMEOUT_SECONDS) before the client's 15 s timeout
    hung = sum(s.transport_errors for s in outcome.signups)
    assert hung == 0, f"{hung} requests got no answer (PUBLISH_TIMEOUT_SECONDS={PUBLISH_TIMEOUT_SECONDS})"
