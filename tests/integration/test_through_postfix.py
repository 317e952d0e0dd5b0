"""Our consumers through a real MTA's limits: Debian's Postfix as the relay, with anvil capping connections and the
mail rate of the one client all our processes are to it (127.0.0.1). Its replies are Postfix's own (421 4.7.0 at
the greeting, 450 4.7.1 to MAIL FROM; tests/support/postfix.py), and nobody here wrote them.
"""

from __future__ import annotations

import pytest

from tests.support.amqp import event_body, publish_raw, read_queue
from tests.support.env import email_env
from tests.support.fleet import ConsumerFleet
from tests.support.prometheus import scrape
from tests.support.waits import eventually

pytestmark = pytest.mark.slow

PROCESSES = 3
MAILS = 150
POSTFIX_LIMITS = {"connection_count_limit": 2, "message_rate_limit": 50, "rate_time_unit": "5s"}  # 10 mails/s


async def test_three_processes_through_a_postfix_relay_with_anvil_limits_lose_nothing_and_retry_nothing(
        vhost, tmp_path, postfix_relay, relay_sink):
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(MAILS)]
    fleet = ConsumerFleet(email_env(vhost.url, postfix_relay.port), PROCESSES, tmp_path)
    try:
        for slot in range(PROCESSES):
            fleet.start(slot)
        for slot in range(PROCESSES):
            await fleet.wait_ready(slot)
        await publish_raw(vhost.url, [event_body(event_id=event_id) for event_id in ids])
        await eventually(lambda: all(relay_sink.by_event()[e] >= 1 for e in ids), timeout=90, interval=0.5,
                         what=f"{MAILS} mails relayed by Postfix at 10/s")
        outcomes = {outcome: 0.0 for outcome in ("retried", "deferred", "dead_lettered")}
        for slot in range(PROCESSES):
            metrics = await scrape(fleet.url(slot, "/metrics"))
            for outcome in outcomes:
                outcomes[outcome] += metrics.value("email_messages_total", outcome=outcome) or 0
    finally:
        await fleet.stop_all()
        fleet.cleanup()
    log = postfix_relay.log()  # smtpd's warnings when anvil says no
    refused, too_much = log.count("Connection concurrency limit"), log.count("Message delivery request rate")
    print(f"\nthrough Postfix: {MAILS} relayed; Postfix refused {refused} connections and {too_much} MAIL FROMs; "
          f"ours deferred {outcomes['deferred']:.0f}, retried {outcomes['retried']:.0f}")
    assert {e: n for e, n in relay_sink.by_event().items() if e in ids and n != 1} == {}
    assert refused + too_much > 0, "Postfix's limits were never reached: the test proves nothing"
    assert outcomes["retried"] == 0 and outcomes["dead_lettered"] == 0  # throttling used up no attempt
    assert await read_queue(vhost.url, "email.welcome.dlq") == []
