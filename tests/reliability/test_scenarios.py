"""Reliability scenarios: real processes under load while things break. Each ends with the invariant (conftest):
every 202 is exactly one mail or one dead letter with a reason; nothing lost; duplicates only where at-least-once
allows them (none that dedup should have caught).

Small version by default (a few hundred signups per scenario); RELIABILITY_FULL=1 for the full one.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.probes import ProbeSet
from tests.support.report import FULL
from tests.support.waits import eventually

from .harness import ReliabilityRun, ScenarioConfig
from .invariant import check_invariant

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow,
              pytest.mark.timeout(900 if FULL else 240)]

RECOVER_WITHIN = 30  # seconds after a heal: every service serves again, without a restart
CLIENT_CONCURRENCY = 32  # SignupLoad's default: publishes that can be in flight at a broker disruption
DEDUP_OFF = [pytest.param(False, id="dedup-off")]
DEDUP_BOTH = [*DEDUP_OFF, pytest.param(True, id="dedup-on")]
DEDUP_FULL_BOTH = DEDUP_BOTH if FULL else DEDUP_OFF  # dedup on too where it changes the outcome, in the full suite


def size(small, full):
    return full if FULL else small


# Seconds an SMTP outage or a run of 4xx answers lasts. Two of them, with the time between, stay well inside the
# harness' retry window (31.5 s), so every mail must still go out: no retries_exhausted.
STRETCH = size((1.5, 2.5), (3.0, 6.0))


# -- chaos ------------------------------------------------------------------------------------------------------------

async def sigkill_at_random(run: ReliabilityRun) -> None:
    """SIGKILL a random consumer every few seconds while the load runs; start it again after a random pause."""
    fleet, rng = run.fleet, run.rng
    min_kills = size(6, 20)
    while not run.load.finished.is_set() or run.chaos.counts["sigkill"] < min_kills:
        await asyncio.sleep(rng.uniform(*size((0.3, 1.5), (1.0, 3.0))))  # a restart costs ~1 CPU second
        slot = rng.randrange(run.config.consumers)
        if fleet.alive(slot):
            fleet.kill(slot)
            # Up to CONCURRENCY unacked messages of that process come back; those the SMTP server had accepted are
            # sent a second time (dedup on: only those whose send was not recorded yet).
            run.chaos.record("sigkill", could_duplicate=run.config.concurrency,
                             could_go_unrecorded=run.config.concurrency)
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            fleet.start(slot)


async def close_all_connections(run: ReliabilityRun) -> None:
    """`rabbitmqctl close_all_connections --vhost V reason` several times during the load: producer and consumers."""
    closes = size(3, 8)
    for i in range(closes):
        await run.until_sent((i + 1) / (closes + 1))
        await asyncio.to_thread(run.vhost.close_connections, "reliability suite: every connection force-closed")
        # Each consumer's unacked messages come back; each publish in flight may be stored without its confirm.
        run.chaos.record("connections closed",
                         could_duplicate=run.config.consumers * run.config.concurrency + CLIENT_CONCURRENCY)


async def smtp_down(run: ReliabilityRun) -> None:
    """Stop the SMTP server for a stretch (connections refused), then start a new one on the same port."""
    for fraction in (0.25, 0.6)[:size(1, 2)]:
        await run.until_sent(fraction)
        run.smtp.stop()
        run.chaos.record("smtp down")
        await asyncio.sleep(run.rng.uniform(*STRETCH))  # the outage itself
        run.smtp.start()
    # accepted, but the 250 may never have reached the sender
    run.chaos.duplicate_bound += run.smtp.cut_off_in_data
    run.chaos.unrecorded_bound += run.smtp.cut_off_in_data


async def smtp_answers_4xx(run: ReliabilityRun) -> None:
    """Every DATA answered 421 for a stretch, later 451 for another stretch."""
    for fraction, reply in ((0.2, "421 4.3.2 too busy, try again later"), (0.6, "451 4.3.0 temporary local problem")):
        await run.until_sent(fraction)
        run.smtp.fail_with(reply)
        run.chaos.record(f"smtp {reply[:3]}")
        await asyncio.sleep(run.rng.uniform(*STRETCH))  # the stretch itself
        run.smtp.fail_with(None)


async def rolling_restart(run: ReliabilityRun) -> None:
    """SIGTERM every consumer in turn in the middle of the load, each while it is sending, and each replaced once it
    has exited."""
    await run.until_sent(0.3)
    for slot in range(run.config.consumers):
        await eventually(lambda slot=slot: run.fleet.in_progress_of(slot), timeout=20, interval=0.01,
                         what=f"email-service #{slot} handling a message")
        code = await run.fleet.terminate(slot)
        assert code == 0, f"email-service #{slot} exited {code} after SIGTERM (logs in {run.workdir})"
        run.chaos.record("sigterm")
        run.fleet.start(slot)
        await run.fleet.wait_ready(slot)


async def broker_restart(run: ReliabilityRun) -> None:
    """`rabbitmqctl stop_app`, a pause, `start_app` of the run's private node: every connection drops and the broker
    refuses new ones. Every service's /readyz is polled throughout: detection is the stop to its first "not ready",
    recovery the node's `await_startup` to "ready" for good."""
    ctl = run.vhost.ctl
    await run.until_sent(0.4)
    async with ProbeSet(run.readiness_probes()) as probes:
        stopped = time.monotonic()
        await asyncio.to_thread(ctl, "stop_app")
        run.chaos.record("broker restart",
                         could_duplicate=run.config.consumers * run.config.concurrency + CLIENT_CONCURRENCY)
        try:
            await asyncio.sleep(run.rng.uniform(2.0, 5.0))  # the outage itself
        finally:
            await asyncio.to_thread(ctl, "start_app")
            await asyncio.to_thread(ctl, "await_startup")
        started = time.monotonic()
        await eventually(lambda: probes.all_ready_since(started), timeout=RECOVER_WITHIN, interval=0.1,
                         what=f"every service ready again after start_app (logs in {run.workdir})")
    run.record_timings(probes.probes, stopped, started)


# -- scenarios --------------------------------------------------------------------------------------------------------

async def run_scenario(scenario, config: ScenarioConfig, chaos, tmp_path, vhost=None):
    async with scenario(config, vhost) as run:
        await run.drive(chaos)
        outcome = await run.settle()
    check_invariant(outcome, config, tmp_path)
    return outcome


@pytest.mark.parametrize("dedup", DEDUP_BOTH)
async def test_sigkill_consumers_at_random_intervals(scenario, tmp_path, dedup):
    # A slow SMTP server (0.25 s a mail in the small version, 0.1 s in the full one; 8 connections per process) and
    # about as many signups as the consumers can take: a consumer holds up to CONCURRENCY messages when it is killed.
    config = ScenarioConfig("sigkill consumers", signups=size(400, 5000), rate=size(100, 125), dedup=dedup,
                            smtp_delay=size(0.25, 0.1))
    outcome = await run_scenario(scenario, config, sigkill_at_random, tmp_path)
    assert outcome.disruptions["sigkill"] >= size(6, 20)


@pytest.mark.parametrize("dedup", DEDUP_FULL_BOTH)
async def test_broker_connections_force_closed(scenario, tmp_path, dedup):
    config = ScenarioConfig("broker connections closed", signups=size(250, 1000), rate=size(40, 100), dedup=dedup,
                            smtp_delay=0.05)
    await run_scenario(scenario, config, close_all_connections, tmp_path)


@pytest.mark.parametrize("dedup", DEDUP_FULL_BOTH)
async def test_broker_restart(scenario, private_vhost, tmp_path, dedup):
    # On a RabbitMQ node of the suite's own (private_broker): the shared one is never restarted.
    config = ScenarioConfig("broker restart", signups=size(250, 1000), rate=size(40, 100), dedup=dedup,
                            client_attempts=40, drain_timeout=180)
    outcome = await run_scenario(scenario, config, broker_restart, tmp_path, private_vhost)
    assert outcome.disruptions["broker restart"] == 1


@pytest.mark.parametrize("dedup", DEDUP_FULL_BOTH)
async def test_smtp_server_down_for_a_stretch(scenario, tmp_path, dedup):
    config = ScenarioConfig("smtp down, 550 for some", signups=size(250, 1000), rate=size(40, 100), dedup=dedup,
                            refused_every=40, allowed_dead_letters=frozenset({"smtp_rejected"}))
    await run_scenario(scenario, config, smtp_down, tmp_path)


@pytest.mark.parametrize("dedup", DEDUP_OFF)
async def test_smtp_answers_421_then_451_for_a_stretch(scenario, tmp_path, dedup):
    config = ScenarioConfig("smtp 421/451, 550 for some", signups=size(250, 1000), rate=size(40, 100), dedup=dedup,
                            refused_every=40, allowed_dead_letters=frozenset({"smtp_rejected"}))
    await run_scenario(scenario, config, smtp_answers_4xx, tmp_path)


@pytest.mark.parametrize("dedup", DEDUP_OFF)
async def test_rolling_restart_sigterm_every_consumer(scenario, tmp_path, dedup):
    config = ScenarioConfig("rolling restart (SIGTERM)", signups=size(250, 1000), rate=size(40, 100), dedup=dedup,
                            consumers=size(2, 3), smtp_delay=0.1)
    outcome = await run_scenario(scenario, config, rolling_restart, tmp_path)
    # A graceful stop finishes what it holds: nothing left unacked, so nothing sent twice. (One log line per stop
    # that had messages in flight: every SIGTERM of the rolling restart, plus those at the end that had work.)
    assert len(outcome.logs.left_unacked) >= config.consumers, outcome.logs.left_unacked
    assert not any(outcome.logs.left_unacked), outcome.logs.left_unacked
    assert outcome.duplicates == 0
