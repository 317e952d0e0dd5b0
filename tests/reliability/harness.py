"""The scenario harness: the real producer process, several email-service processes, the real RabbitMQ (this test's
vhost), a private Redis for dedup and an SMTP server the test can break.

    async with ReliabilityRun(config, vhost, tmp_path, seed) as run:
        await run.drive(chaos)          # the load and the chaos at the same time
        outcome = await run.settle()    # heal, wait (bounded) until nothing is left to do, count

Every process runs in its own process group on loopback and is killed with its group at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika

from email_service.retry import RetryPolicy
from email_service.topology import DEAD_LETTER_QUEUE, WORK_QUEUE
from tests.support.amqp import read_dead_letters
from tests.support.broker import VHost
from tests.support.env import email_env, producer_env
from tests.support.fault_proxy import FaultProxy
from tests.support.fleet import ConsumerFleet
from tests.support.load import SignupLoad
from tests.support.ports import free_port
from tests.support.probes import ReadinessProbe
from tests.support.processes import producer_process
from tests.support.redis_server import PrivateRedis
from tests.support.service_logs import ServiceLogs
from tests.support.smtp_server import SmtpTestServer
from tests.support.waits import eventually

from .outcome import Outcome

SEED = int(os.environ.get("RELIABILITY_SEED", "20261128"))  # of every random choice of the suite
RETRY_DELAYS = "0.5,1,2,4,8"
MAX_ATTEMPTS = 8  # retry window 0.5+1+2+4+8+8+8 = 31.5 s: longer than any SMTP outage the scenarios make
PUBLISH_TIMEOUT_SECONDS = 5
SMTP_TIMEOUT_SECONDS = 2  # with dedup on, a claim left by a killed process lasts 4 x this + 10 s
SHUTDOWN_TIMEOUT_SECONDS = 10


@dataclass
class ScenarioConfig:
    name: str
    signups: int
    rate: float  # signups per second offered by the client
    consumers: int = 3
    concurrency: int = 16  # CONCURRENCY of each email-service (its prefetch)
    dedup: bool = False
    client_attempts: int = 10
    refused_every: int = 0  # every n-th signup's address is refused by the SMTP server (550)
    smtp_delay: float = 0.0
    allowed_dead_letters: frozenset[str] = frozenset()
    drain_timeout: float = 120.0
    broker_proxy: bool = False  # the producer's and consumer #0's broker links through a FaultProxy (run.broker_proxy)
    heartbeat: int = 2  # AMQP_HEARTBEAT_SECONDS of both services
    smtp_proxy: bool = False  # every consumer's SMTP link through a FaultProxy (run.smtp_proxy)


@dataclass
class Chaos:
    """What a scenario's chaos did, for the table and for the duplicate bounds."""

    counts: Counter[str] = field(default_factory=Counter)
    duplicate_bound: int = 0  # dedup off: messages that could be handled twice (in flight at a disruption)
    unrecorded_bound: int = 0  # dedup on: sends the SMTP server could accept without the sender recording them
    timings: dict[str, float] = field(default_factory=dict)  # "<who> detected"/"<who> recovered": seconds
    figures: dict[str, str] = field(default_factory=dict)  # what else the scenario measured, for the table

    def record(self, what: str, could_duplicate: int = 0, could_go_unrecorded: int = 0) -> None:
        self.counts[what] += 1
        self.duplicate_bound += could_duplicate
        self.unrecorded_bound += could_go_unrecorded


class ReliabilityRun:
    def __init__(self, config: ScenarioConfig, vhost: VHost, workdir: Path, seed: int) -> None:
        self.config = config
        self.vhost = vhost
        self.workdir = workdir
        self.rng = random.Random(f"{seed}-{config.name}-{config.dedup}")
        self.run_id = uuid.uuid4().hex[:12]
        self.chaos = Chaos()
        self.redis: PrivateRedis | None = None
        self.smtp = SmtpTestServer(free_port())
        self.policy = RetryPolicy(max_attempts=MAX_ATTEMPTS, delays=tuple(float(d) for d in RETRY_DELAYS.split(",")))
        broker = urlsplit(vhost.url)
        self.broker_proxy = FaultProxy(broker.port or 5672, upstream_host=broker.hostname or "127.0.0.1",
                                       seed=self.rng.randrange(2**32)) if config.broker_proxy else None
        self.proxied_url = self.broker_proxy.url_for(vhost.url) if self.broker_proxy else vhost.url
        self.smtp_proxy = FaultProxy(self.smtp.port, seed=self.rng.randrange(2**32)) if config.smtp_proxy else None
        self.producer_port = free_port()
        self.producer = producer_process(
            producer_env(self.proxied_url, http_port=self.producer_port, LOG_LEVEL="WARNING",
                         PUBLISH_TIMEOUT_SECONDS=PUBLISH_TIMEOUT_SECONDS, AMQP_HEARTBEAT_SECONDS=config.heartbeat),
            workdir / "producer.log")
        self.load = SignupLoad(f"http://127.0.0.1:{self.producer_port}", count=config.signups, run_id=self.run_id,
                               rate=config.rate, max_attempts=config.client_attempts, seed=self.rng.randrange(2**32),
                               refused_every=config.refused_every,
                               on_signup=lambda s: self.smtp.reject_recipient(s.email) if s.refused else None)
        self.fleet: ConsumerFleet | None = None
        self.started = 0.0

    def email_env(self) -> dict[str, str]:
        dedup = {} if self.redis is None else {"DEDUP_URL": self.redis.url,
                                               "DEDUP_KEY_PREFIX": f"wm-reliability-{self.run_id}:"}
        smtp_port = self.smtp_proxy.port if self.smtp_proxy else self.smtp.port
        return email_env(self.vhost.url, smtp_port, SMTP_TIMEOUT_SECONDS=SMTP_TIMEOUT_SECONDS,
                         CONCURRENCY=self.config.concurrency, RETRY_DELAYS=RETRY_DELAYS, MAX_ATTEMPTS=MAX_ATTEMPTS,
                         SHUTDOWN_TIMEOUT_SECONDS=SHUTDOWN_TIMEOUT_SECONDS, LOG_LEVEL="info",
                         AMQP_HEARTBEAT_SECONDS=self.config.heartbeat, **dedup)

    async def __aenter__(self) -> ReliabilityRun:
        self.started = time.monotonic()
        try:
            if self.config.dedup:
                self.redis = await PrivateRedis(self.workdir).start()
            self.smtp.delay = self.config.smtp_delay
            self.smtp.start()
            for proxy in (self.broker_proxy, self.smtp_proxy):
                if proxy is not None:
                    proxy.start()
            self.fleet = ConsumerFleet(self.email_env(), self.config.consumers, self.workdir,
                                       shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
                                       slot_env={0: {"AMQP_URL": self.proxied_url}})
            for slot in range(self.config.consumers):
                self.fleet.start(slot)
            self.producer.start()
            for slot in range(self.config.consumers):
                await self.fleet.wait_ready(slot)
            await self.producer.wait_ready(timeout=30)
        except BaseException:
            self.cleanup()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        self.producer.stop()
        if self.fleet is not None:
            self.fleet.cleanup()
        self.smtp.stop()
        for proxy in (self.broker_proxy, self.smtp_proxy):
            if proxy is not None:
                proxy.stop()
        if self.redis is not None:
            self.redis.stop()

    async def drive(self, chaos: Callable[[ReliabilityRun], Awaitable[None]] | None = None) -> None:
        """Send the load and run the chaos next to it; both must end (the chaos ends when the load has)."""
        load = asyncio.create_task(self.load.run())
        tasks = [load]
        if chaos is not None:
            tasks.append(asyncio.create_task(chaos(self)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failing chaos step fails the test at once
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def until_sent(self, fraction: float) -> None:
        """Wait (bounded) until this share of the signups has been sent."""
        target = int(self.config.signups * fraction)
        await eventually(lambda: self.load.sent >= target or self.load.finished.is_set(),
                         timeout=self.config.signups / self.config.rate + 60, interval=0.05,
                         what=f"{fraction:.0%} of the signups sent")

    def readiness_probes(self) -> list[ReadinessProbe]:
        """One /readyz poller for the producer and one per consumer slot (`async with ProbeSet(...)`)."""
        assert self.fleet is not None
        return [ReadinessProbe("producer", f"http://127.0.0.1:{self.producer_port}/readyz"),
                *(ReadinessProbe(f"consumer #{slot}", self.fleet.url(slot)) for slot in range(self.config.consumers))]

    def record_timings(self, probes: list[ReadinessProbe], fault: float, heal: float) -> None:
        """Each probe's detection (fault to its first "not ready") and recovery (heal to "ready" for good)."""
        for probe in probes:
            for what, seconds in (("detected", probe.detected(fault)), ("recovered", probe.recovered(heal))):
                if seconds is not None:
                    self.chaos.timings[f"{probe.name} {what}"] = seconds

    # -- the end of a scenario

    async def heal(self) -> None:
        """Undo what the chaos left behind: SMTP up and answering, every consumer slot running and ready."""
        self.smtp.fail_with(None)
        for proxy in (self.broker_proxy, self.smtp_proxy):
            if proxy is not None:
                proxy.clear()
        if not self.smtp.running:
            self.smtp.start()
        assert self.fleet is not None
        for slot in range(self.config.consumers):
            if not self.fleet.alive(slot):
                self.fleet.start(slot)
        for slot in range(self.config.consumers):
            await self.fleet.wait_ready(slot)

    async def _work_left(self, channel) -> int:
        left = 0
        for name in [WORK_QUEUE, *(queue for queue, _ in self.policy.tier_queues)]:
            queue = await channel.declare_queue(name, passive=True)
            left += queue.declaration_result.message_count
        return left

    def _messages_in_queues(self) -> dict[str, int]:
        """Ready + unacknowledged per queue, from the broker itself (slow: only to confirm)."""
        out = self.vhost.ctl("list_queues", "-p", self.vhost.name, "name", "messages", "--no-table-headers", "--quiet")
        return {name: int(count) for name, count in (line.split("\t") for line in out.strip().splitlines() if line)}

    async def drained(self) -> None:
        """Wait (bounded) until no message is left anywhere but in the dead-letter queue and no consumer is busy."""
        assert self.fleet is not None
        connection = await aio_pika.connect(self.vhost.url)
        try:
            channel = await connection.channel()

            async def idle() -> bool:
                if await self._work_left(channel) or await self.fleet.in_progress():
                    return False
                queues = await asyncio.to_thread(self._messages_in_queues)
                return not any(count for name, count in queues.items() if name != DEAD_LETTER_QUEUE)

            await eventually(idle, timeout=self.config.drain_timeout, interval=0.25,
                             what=f"every message handled (logs in {self.workdir})")
        finally:
            await connection.close()

    async def read_dead_letters(self) -> list[tuple[str | None, str]]:
        return [(letter.message_id, letter.reason) for letter in await read_dead_letters(self.vhost.url)]

    def smtp_sessions(self, event_id: str) -> list[str]:
        """When and from which client port the SMTP server accepted each mail of one event."""
        wall_minus_monotonic = time.time() - time.monotonic()
        return [f"{wall_minus_monotonic + mail.at:.3f} from {mail.peer_port}"
                for mail in self.smtp.received() if mail.event_id == event_id]

    def _write_post_mortem(self, outcome: Outcome) -> None:
        """outcome.json next to the process logs: what went wrong for which event."""
        duplicated = {e: n for e, n in outcome.by_event.items() if n > 1}
        (self.workdir / "outcome.json").write_text(json.dumps({
            "row": outcome.row(), "lost": outcome.lost, "unknown": outcome.unknown,
            "duplicated": {e: {"copies": n, "smtp": self.smtp_sessions(e),
                               "logged_sent": outcome.logs.sent[e]} for e, n in duplicated.items()},
            "dead_letters": [list(letter) for letter in outcome.dead_letters],
        }, indent=1))

    async def settle(self) -> Outcome:
        await self.heal()
        await self.drained()
        assert self.fleet is not None
        await self.fleet.stop_all()
        connection = await aio_pika.connect(self.vhost.url)
        try:
            left = await self._work_left(await connection.channel())
        finally:
            await connection.close()
        dead_letters = await self.read_dead_letters()
        outcome = Outcome(
            scenario=self.config.name, dedup=self.config.dedup, signups=self.load.signups, mails=self.smtp.by_event(),
            dead_letters=dead_letters, disruptions=self.chaos.counts,
            duplicate_bound=self.chaos.unrecorded_bound if self.config.dedup else self.chaos.duplicate_bound,
            logs=ServiceLogs.read(self.fleet.logs), seconds=time.monotonic() - self.started,
            timings=dict(self.chaos.timings), figures=dict(self.chaos.figures))
        self._write_post_mortem(outcome)
        if left:
            outcome.notes.append(f"{left} messages back in the queues after the final graceful stop")
        bad_exits = [(how, code) for how, code in self.fleet.exit_codes if how == "sigterm" and code != 0]
        if bad_exits:
            outcome.notes.append(f"graceful stops with a non-zero exit code: {bad_exits}")
        return outcome
