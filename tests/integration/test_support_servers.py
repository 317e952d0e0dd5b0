"""The test-support layer's SMTP servers (the plain one, the throttling provider, the Postfix relay) and signup load
client, against a real SMTP client and the real producer.

Every suite counts mails and signups through these two; a behaviour they get wrong (a deferral that is recorded as
accepted, a retry that is not made) would make those suites prove nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aiosmtplib
import pytest

from tests.support.load import SignupLoad
from tests.support.ports import free_port
from tests.support.provider import GOOGLE, MICROSOFT, RELAY, SES, ThrottlingSmtpServer
from tests.support.smtp_server import SmtpTestServer
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

POSTFIX_LIMITS = {"connection_count_limit": 2, "message_rate_limit": 3, "rate_time_unit": "60s"}  # postfix_relay's


def mail(event_id: str) -> bytes:
    return (f"From: a@acme.test\r\nTo: b@example.com\r\nMessage-ID: <{event_id}@acme.test>\r\n"
            "Subject: hi\r\n\r\nbody\r\n").encode()


async def send(server: SmtpTestServer, event_id: str, to: str = "b@example.com") -> tuple[int, str]:
    """One mail over a new connection; returns the reply to DATA (or to RCPT, when that refused it)."""
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=10) as client:
            refused, reply = await client.sendmail("a@acme.test", [to], mail(event_id))
    except aiosmtplib.SMTPResponseException as error:
        return error.code, error.message
    except aiosmtplib.SMTPRecipientsRefused as error:
        return error.recipients[0].code, error.recipients[0].message
    return 250, reply


async def test_smtp_server_defers_fails_refuses_and_records_accepted_mails_only() -> None:
    server = SmtpTestServer(free_port())
    server.start()
    try:
        server.defer_next(1, "451 4.3.0 try again later")
        assert (await send(server, "e1"))[0] == 451
        assert (await send(server, "e1"))[0] == 250
        server.fail_with("421 4.3.2 too busy")
        assert (await send(server, "e2"))[0] == 421
        server.fail_with(None)
        server.rules.append(lambda srv, envelope: "454 4.7.0 Throttling failure" if srv.count() >= 2 else None)
        assert (await send(server, "e2"))[0] == 250
        assert (await send(server, "e3"))[0] == 454
        server.rules.clear()
        server.reject_recipient("gone@example.com")
        assert (await send(server, "e4", to="gone@example.com"))[0] == 550
        assert server.by_event() == {"e1": 1, "e2": 1}
        assert (server.deferred, server.refused) == (3, 1)
        first, second = server.received()
        assert first.at <= second.at and first.message["Message-ID"] == "<e1@acme.test>"
    finally:
        server.stop()


async def test_smtp_server_restarts_on_its_port_and_keeps_what_it_received() -> None:
    server = SmtpTestServer(free_port())
    server.start()
    await send(server, "before")
    server.stop()
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=5).connect()
    server.start()
    try:
        await send(server, "after")
        assert server.by_event() == {"before": 1, "after": 1} and server.stops == 1
    finally:
        server.stop()


async def send_on(client: aiosmtplib.SMTP, event_id: str) -> tuple[int, str]:
    """One mail over an open connection; the reply that ended it (DATA's, or the MAIL/RCPT that refused it)."""
    try:
        _, reply = await client.sendmail("a@acme.test", ["b@example.com"], mail(event_id))
    except aiosmtplib.SMTPResponseException as error:
        return error.code, error.message
    except aiosmtplib.SMTPRecipientsRefused as error:
        return error.recipients[0].code, error.recipients[0].message
    return 250, reply


async def connect(server: SmtpTestServer) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=10)
    await client.connect()
    return client


async def test_smtp_server_records_every_connection_and_how_many_were_open_at_once() -> None:
    server = SmtpTestServer(free_port())
    server.start()
    try:
        clients = [await connect(server) for _ in range(3)]
        assert (server.open_connections, server.max_open_connections) == (3, 3)
        for client in clients:
            await client.quit()
        await eventually(lambda: server.open_connections == 0, what="every connection closed")
        assert [n for _, n in server.connection_timeline] == [1, 2, 3, 2, 1, 0]
        assert all(not c.open and c.refused_with is None for c in server.connections)
    finally:
        server.stop()


async def test_provider_accepts_no_more_than_its_rate_over_all_connections() -> None:
    provider = ThrottlingSmtpServer(free_port(), rate=20, burst=5, personality=SES)
    provider.start()
    try:
        clients = [await connect(provider) for _ in range(4)]
        started = time.monotonic()
        replies: list[tuple[int, str]] = []

        async def keep_sending(client: aiosmtplib.SMTP, k: int) -> None:
            for i in range(15):
                replies.append(await send_on(client, f"c{k}-{i}"))

        await asyncio.gather(*(keep_sending(c, k) for k, c in enumerate(clients)))
        elapsed = time.monotonic() - started
        accepted = sum(code == 250 for code, _ in replies)
        assert provider.count() == accepted and accepted + provider.throttled["data"] == 60
        assert accepted <= 5 + 20 * elapsed + 1, (accepted, elapsed)  # the bucket: burst + rate x time
        assert provider.throttled["data"] > 0 and provider.throttling_replies() == provider.throttled["data"]
        assert {reply for code, reply in replies if code != 250} == {
            "4.7.0 Throttling failure: Maximum sending rate exceeded."}
        assert {code for code, _ in replies} == {250, 454}
        assert provider.max_in_window(1.0) <= 5 + 20 + 1
        for client in clients:
            await client.quit()
    finally:
        provider.stop()


async def test_provider_over_its_connection_cap_refuses_at_the_greeting_and_frees_the_slot_on_close() -> None:
    provider = ThrottlingSmtpServer(free_port(), rate=None, max_connections=2, personality=RELAY)
    provider.start()
    try:
        first, second = await connect(provider), await connect(provider)
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
            await connect(provider)
        assert (refused.value.code, refused.value.message) == (421, "4.7.0 Too many connections")
        await eventually(lambda: provider.open_connections == 2, what="the refused connection closed by the server")
        assert provider.max_open_connections == 3 and provider.throttled["connect"] == 1
        await first.quit()
        await eventually(lambda: provider.open_connections == 1, what="a slot freed")
        third = await connect(provider)
        assert await send_on(third, "after") == (250, "2.0.0 accepted")
        assert provider.connections[2].refused_with == "421 4.7.0 Too many connections"
        await second.quit()
        await third.quit()
    finally:
        provider.stop()


async def test_google_throttles_at_rcpt_and_microsoft_past_three_connections_at_mail() -> None:
    google = ThrottlingSmtpServer(free_port(), rate=1, burst=1, personality=GOOGLE)
    microsoft = ThrottlingSmtpServer(free_port(), rate=None, personality=MICROSOFT)
    google.start()
    microsoft.start()
    try:
        assert (await send(google, "g1"))[0] == 250
        assert await send(google, "g2") == (450, "4.2.1 Peak SMTP relay limit exceeded")
        assert google.throttled["rcpt"] == 1 and google.by_event() == {"g1": 1}
        clients = [await connect(microsoft) for _ in range(4)]
        replies = [await send_on(client, f"m{i}") for i, client in enumerate(clients)]
        assert [code for code, _ in replies] == [250, 250, 250, 432]
        assert replies[3][1] == "4.3.2 Concurrent connections limit exceeded."
        assert microsoft.throttled["mail"] == 1 and microsoft.count() == 3
        for client in clients:
            await client.quit()
    finally:
        google.stop()
        microsoft.stop()


async def test_postfix_relay_throttles_with_its_own_replies_and_relays_what_it_accepted(postfix_relay,
                                                                                         relay_sink) -> None:
    first, second = await connect(postfix_relay), await connect(postfix_relay)
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
        await connect(postfix_relay)  # a third connection: over smtpd_client_connection_count_limit
    assert (refused.value.code, refused.value.message) == (
        421, "4.7.0 relay.test Error: too many connections from 127.0.0.1")
    replies = [await send_on(first, f"p{i}") for i in range(5)]  # over smtpd_client_message_rate_limit after 3
    assert [code for code, _ in replies] == [250, 250, 250, 450, 450]
    assert replies[3][1] == "4.7.1 Error: too much mail from 127.0.0.1"
    await eventually(lambda: relay_sink.count() == 3, timeout=30, what="Postfix relaying the 3 mails it accepted")
    assert relay_sink.by_event() == {"p0": 1, "p1": 1, "p2": 1}
    assert "Connection concurrency limit exceeded" in postfix_relay.log()
    assert "Message delivery request rate limit exceeded" in postfix_relay.log()
    await first.quit()
    await second.quit()


async def test_load_client_closed_loop_gets_every_signup_accepted(producer_factory, email_service_factory) -> None:
    async with email_service_factory(), producer_factory() as producer:  # the consumer binds the queue
        await producer.wait_ready()
        load = SignupLoad(producer.url, run_id=uuid.uuid4().hex[:8], rate=None, count=30, concurrency=4)
        await load.run()
    assert load.sent == 30 and len(load.accepted()) == 30
    assert all(s.returned_event_id == s.event_id for s in load.signups), "the key must fix the event id"
    assert load.finished.is_set() and load.count_status(202) == 30


async def test_load_client_open_loop_retries_503_within_its_attempts(producer_factory) -> None:
    # No queue is bound in this fresh vhost: the broker returns every mandatory publish, the producer answers 503.
    async with producer_factory() as producer:
        await producer.wait_ready()
        load = SignupLoad(producer.url, run_id=uuid.uuid4().hex[:8], rate=50, count=5, max_attempts=3,
                          retry_after_cap=0.1, refused_every=2)
        await load.run()
    assert [s.statuses for s in load.signups] == [[503, 503, 503]] * 5
    assert not load.accepted() and len(load.answered_at("503")) == 15
    assert [s.refused for s in load.signups] == [False, True, False, True, False]
