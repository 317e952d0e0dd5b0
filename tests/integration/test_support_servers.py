"""The test-support layer's SMTP server and signup load client, against a real SMTP client and the real producer.

Every suite counts mails and signups through these two; a behaviour they get wrong (a deferral that is recorded as
accepted, a retry that is not made) would make those suites prove nothing.
"""

from __future__ import annotations

import uuid

import aiosmtplib
import pytest

from tests.support.load import SignupLoad
from tests.support.ports import free_port
from tests.support.smtp_server import SmtpTestServer

pytestmark = pytest.mark.integration


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
