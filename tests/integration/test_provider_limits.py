"""Scaling out never turns a provider's throttling into retries or dead letters (real RabbitMQ, Redis, processes).

A backlog waits in the work queue; several email-service processes drain it into a provider that allows
RATE mails/s and CAP connections (tests/support/provider.py, answering as Amazon SES does). The ideal drain time
is backlog / RATE; throttled mail is deferred, never counted as an attempt.
"""

from __future__ import annotations

import time

import pytest

from tests.support.amqp import event_body, publish_raw, read_queue
from tests.support.env import email_env
from tests.support.fleet import ConsumerFleet
from tests.support.ports import free_port
from tests.support.prometheus import scrape
from tests.support.provider import SES, ThrottlingSmtpServer
from tests.support.redis_server import PrivateRedis
from tests.support.waits import eventually

pytestmark = pytest.mark.slow

RATE = 40.0
CAP = 8
BACKLOG = 1_000
PROCESSES = 3
IDEAL_SECONDS = BACKLOG / RATE
DLQ = "email.welcome.dlq"
WORK_QUEUE = "email.welcome"


LEASE_SECONDS = 15  # email_service.budget.LEASE_SECONDS


def event_ids(count: int) -> list[str]:
    return [f"00000000-0000-4000-8000-{n:012d}" for n in range(count)]


async def drain(vhost, tmp_path, **settings: object) -> tuple[ThrottlingSmtpServer, float, list[str]]:
    provider = ThrottlingSmtpServer(free_port(), rate=RATE, max_connections=CAP, personality=SES)
    provider.start()
    ids = event_ids(BACKLOG)
    fleet = ConsumerFleet(email_env(vhost.url, provider.port, **settings), PROCESSES, tmp_path)
    try:
        # the topology first (one consumer), then the backlog, then the others
        fleet.start(0)
        await fleet.wait_ready(0)
        await fleet.terminate(0)
        await publish_raw(vhost.url, [event_body(event_id=event_id) for event_id in ids])
        for slot in range(PROCESSES):
            fleet.start(slot)
        for slot in range(PROCESSES):
            await fleet.wait_ready(slot)
        started = time.monotonic()
        await eventually(lambda: len(provider.mails) >= BACKLOG, timeout=IDEAL_SECONDS * 3, interval=0.2,
                         what=f"{BACKLOG} mails through a provider allowing {RATE:g}/s")
        seconds = time.monotonic() - started
    finally:
        await shut_down(fleet, provider)
    return provider, seconds, ids


async def every_mail_sent(provider: ThrottlingSmtpServer, ids: list[str], what: str) -> None:
    await eventually(lambda: all(provider.by_event()[e] >= 1 for e in ids), timeout=60, interval=0.2, what=what)


async def shut_down(fleet: ConsumerFleet, provider: ThrottlingSmtpServer) -> None:
    await fleet.stop_all()
    fleet.cleanup()
    provider.stop()


def one_mail_each(provider: ThrottlingSmtpServer, ids: list[str]) -> None:
    mails = provider.by_event()
    assert {event_id: mails[event_id] for event_id in ids if mails[event_id] != 1} == {}


async def test_three_processes_without_a_budget_deliver_everything_near_the_provider_rate(vhost, tmp_path):
    provider, seconds, ids = await drain(vhost, tmp_path)
    one_mail_each(provider, ids)
    assert await read_queue(vhost.url, DLQ) == []
    print(f"\nno budget: {seconds:.1f}s for {BACKLOG} (ideal {IDEAL_SECONDS:.0f}s), "
          f"{provider.throttling_replies()} throttling replies, {provider.max_open_connections} connections at most")
    assert seconds <= 1.3 * IDEAL_SECONDS


async def test_with_the_budget_set_to_the_provider_limits_it_is_hardly_ever_throttled(vhost, tmp_path, dedup_env):
    provider, seconds, ids = await drain(vhost, tmp_path, SEND_RATE_LIMIT=RATE, SMTP_MAX_CONNECTIONS=CAP,
                                         DEDUP_ENABLED="false", **dedup_env)
    one_mail_each(provider, ids)
    assert await read_queue(vhost.url, DLQ) == []
    print(f"\nbudget: {seconds:.1f}s for {BACKLOG} (ideal {IDEAL_SECONDS:.0f}s), "
          f"{provider.throttling_replies()} throttling replies, {provider.max_open_connections} connections at most")
    assert provider.throttled_share() < 0.02
    assert provider.max_open_connections <= CAP
    assert seconds <= 1.3 * IDEAL_SECONDS


async def test_connection_leases_of_a_killed_process_return_within_the_lease_time(vhost, tmp_path, dedup_env):
    provider = ThrottlingSmtpServer(free_port(), rate=None, max_connections=2, personality=SES)
    provider.delay = 0.2  # 20 mails/s need 4 exchanges at once: the first process holds both connection slots
    provider.start()
    ids = event_ids(300)
    env = email_env(vhost.url, provider.port, SEND_RATE_LIMIT=20, SMTP_MAX_CONNECTIONS=2, DEDUP_ENABLED="false",
                    **dedup_env)
    fleet = ConsumerFleet(env, 2, tmp_path)
    try:
        fleet.start(0)
        await fleet.wait_ready(0)
        await publish_raw(vhost.url, [event_body(event_id=event_id) for event_id in ids])
        await eventually(lambda: len(provider.mails) >= 20 and provider.open_connections == 2, timeout=15,
                         what="the first process sending on both connections")
        fleet.kill(0)  # SIGKILL: its two connection leases stay in Redis until they expire
        killed_at = time.monotonic()
        fleet.start(1)
        await fleet.wait_ready(1)
        sent_before = len(provider.mails)
        await eventually(lambda: len(provider.mails) > sent_before, timeout=LEASE_SECONDS + 10, interval=0.1,
                         what="the second process getting a connection slot")
        returned_after = time.monotonic() - killed_at
        await every_mail_sent(provider, ids, "every mail, the killed process's unacked ones included")
    finally:
        await shut_down(fleet, provider)
    print(f"\nslots back {returned_after:.1f}s after the SIGKILL (lease {LEASE_SECONDS}s)")
    assert 0.5 * LEASE_SECONDS <= returned_after <= LEASE_SECONDS + 5  # not before: they were held
    assert provider.max_open_connections <= 2
    assert await read_queue(vhost.url, DLQ) == []


async def test_redis_stopped_mid_run_with_a_budget_loses_nothing(vhost, tmp_path):
    redis = await PrivateRedis(tmp_path).start()
    provider = ThrottlingSmtpServer(free_port(), rate=RATE, max_connections=CAP, personality=SES)
    provider.start()
    ids = event_ids(600)
    env = email_env(vhost.url, provider.port, SEND_RATE_LIMIT=RATE, SMTP_MAX_CONNECTIONS=CAP, REDIS_URL=redis.url,
                    DEDUP_ENABLED="false")
    fleet = ConsumerFleet(env, 2, tmp_path)
    try:
        for slot in range(2):
            fleet.start(slot)
        for slot in range(2):
            await fleet.wait_ready(slot)
        await publish_raw(vhost.url, [event_body(event_id=event_id) for event_id in ids])
        await eventually(lambda: len(provider.mails) >= 150, timeout=30, what="the first mails within the budget")
        redis.stop()

        async def on_their_own_share() -> bool:
            shared = [(await scrape(fleet.url(slot, "/metrics"))).value("email_send_budget_shared") for slot in (0, 1)]
            return shared == [0, 0]

        await eventually(on_their_own_share, timeout=20, what="both processes on their own share of the budget")
        await every_mail_sent(provider, ids, "every mail with Redis down")
    finally:
        await shut_down(fleet, provider)
        redis.stop()
    print(f"\nRedis down: {provider.throttling_replies()} throttling replies, "
          f"{provider.max_rate(5.0):.1f} mails/s at most over 5 s (budget {RATE:g})")
    assert await read_queue(vhost.url, DLQ) == []
    assert provider.max_open_connections <= CAP
    assert provider.max_rate(5.0) <= 1.1 * RATE  # each of the 2 replicas on half the budget


async def test_scaling_from_one_process_to_four_mid_run_keeps_the_aggregate_rate_on_the_budget(vhost, tmp_path,
                                                                                             dedup_env):
    # A provider without limits of its own: what it receives is the budget's doing alone.
    provider = ThrottlingSmtpServer(free_port(), rate=None, max_connections=None, personality=SES)
    provider.start()
    ids = event_ids(800)
    env = email_env(vhost.url, provider.port, SEND_RATE_LIMIT=RATE, SMTP_MAX_CONNECTIONS=CAP, DEDUP_ENABLED="false",
                    **dedup_env)
    fleet = ConsumerFleet(env, 4, tmp_path)
    try:
        fleet.start(0)
        await fleet.wait_ready(0)
        await publish_raw(vhost.url, [event_body(event_id=event_id) for event_id in ids])
        await eventually(lambda: len(provider.mails) >= 200, timeout=30, what="200 mails from the first process")
        for slot in (1, 2, 3):  # as `kubectl scale --replicas=4` would, while the backlog drains
            fleet.start(slot)
        await every_mail_sent(provider, ids, "the backlog drained by four processes")
    finally:
        await shut_down(fleet, provider)
    rates = provider.window_rates(5.0)
    print(f"\n1 -> 4 processes: {', '.join(f'{rate:.1f}' for rate in rates)} mails/s per 5 s window, "
          f"{provider.max_rate(5.0):.1f} at most over any 5 s (budget {RATE:g})")
    one_mail_each(provider, ids)
    assert provider.max_rate(5.0) <= 1.1 * RATE
    assert min(rates) >= 0.9 * RATE
    assert provider.max_open_connections <= CAP


async def test_a_throttled_process_lowers_its_prefetch_so_mail_waits_in_rabbitmq(vhost, tmp_path):
    provider = ThrottlingSmtpServer(free_port(), rate=None, max_connections=2, personality=SES)
    provider.delay = 0.2  # exchanges last long enough for 16 at once to be tried: 5 mails/s per connection
    provider.start()
    capped, lifted = event_ids(500)[:100], event_ids(500)[100:]
    fleet = ConsumerFleet(email_env(vhost.url, provider.port, CONCURRENCY=16), 1, tmp_path)
    try:
        fleet.start(0)
        await fleet.wait_ready(0)
        assert vhost.prefetch_counts(WORK_QUEUE) == [16]
        await publish_raw(vhost.url, [event_body(event_id=event_id) for event_id in capped])
        # the limit drops to the 2 connections admitted, then probes one above them once a second
        await eventually(lambda: vhost.prefetch_counts(WORK_QUEUE)[0] <= 3, timeout=20, interval=0.5,
                         what="the prefetch down to the connections the provider admits")
        provider.cap = None  # the provider lifts its cap: the limit and the prefetch grow back
        await publish_raw(vhost.url, [event_body(event_id=event_id) for event_id in lifted])
        await eventually(lambda: vhost.prefetch_counts(WORK_QUEUE)[0] >= 8, timeout=30, interval=0.5,
                         what="the prefetch growing back towards CONCURRENCY (one more a second)")
        await every_mail_sent(provider, capped + lifted, "every mail")
    finally:
        await shut_down(fleet, provider)
    print(f"\ncap of 2 connections: {provider.throttling_replies()} throttling replies for {len(provider.mails)} mails")
    one_mail_each(provider, capped + lifted)
    assert await read_queue(vhost.url, DLQ) == []
