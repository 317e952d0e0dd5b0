"""SMTP PIPELINING (email_service/pipelining.py) against aiosmtpd and a real Postfix: commands in one write, replies
read in order, every failure classified exactly as when the same exchange goes one command at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from email_service import pipelining
from email_service.errors import PermanentError, Throttled, classify
from tests.support.ports import free_port
from tests.support.smtp_server import SmtpTestServer
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

SENDER = "no-reply@example.com"
# Postfix (POSTFIX_LIMITS below) refuses these two recipients at RCPT: REJECT answers 554 5.7.1, DEFER 450 4.7.1.
POSTFIX_LIMITS = {"extra": {"smtpd_recipient_restrictions":
                            "check_recipient_access inline:{refused@example.com=REJECT, later@example.com=DEFER}, "
                            "permit_mynetworks, reject"}}


def message(event_id: str) -> bytes:
    # a line starting with "." checks the dot-stuffing of the pipelined data
    return (f"Message-ID: <{event_id}@example.com>\r\nFrom: {SENDER}\r\nSubject: hello\r\n\r\n"
            "Hello.\r\n.a line that starts with a dot\r\n").encode()


async def connect(port: int) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False, start_tls=False, timeout=10,
                             local_hostname="mail.example.com")
    await client.connect()
    return client


@pytest.fixture
async def server() -> AsyncIterator[SmtpTestServer]:
    srv = SmtpTestServer(free_port())
    srv.start()
    yield srv
    srv.stop()


async def outcome(client: aiosmtplib.SMTP, recipient: str, event_id: str, pipelined: bool) -> str:
    """'sent', or the failure class (and stage or dead-letter reason) that classify() makes of what was raised."""
    try:
        await pipelining.sendmail(client, SENDER, [recipient], message(event_id), pipelining=pipelined)
    except Exception as exc:  # noqa: BLE001 - what was raised is the subject
        failure = classify(exc)
        if isinstance(failure, Throttled):
            return f"Throttled at {failure.stage}"
        if isinstance(failure, PermanentError):
            return f"PermanentError {failure.reason.value}"
        return type(failure).__name__
    return "sent"


async def test_commands_go_in_one_write_and_replies_are_read_in_order(server):
    client = await connect(server.port)
    try:
        for i in range(3):
            assert await outcome(client, f"user{i}@example.com", f"evt-{i}", pipelined=True) == "sent"
        assert pipelining.advertised(client)
    finally:
        await client.quit()
    assert server.pipelined == 3  # each MAIL FROM came together with its RCPT TO
    mails = server.received()
    assert [m.event_id for m in mails] == ["evt-0", "evt-1", "evt-2"]
    assert [m.rcpt_tos for m in mails] == [["user0@example.com"], ["user1@example.com"], ["user2@example.com"]]
    assert b"\r\n.a line that starts with a dot\r\n" in mails[0].data or b"\n.a line that starts" in mails[0].data


async def test_a_server_without_pipelining_gets_one_command_at_a_time():
    server = SmtpTestServer(free_port(), pipelining=False)
    server.start()
    try:
        client = await connect(server.port)
        assert await outcome(client, "ada@example.com", "evt-1", pipelined=True) == "sent"
        assert not pipelining.advertised(client)
        await client.quit()
    finally:
        server.stop()
    assert server.count() == 1 and server.pipelined == 0


async def test_pipelining_off_sends_one_command_at_a_time(server):
    client = await connect(server.port)
    assert await outcome(client, "ada@example.com", "evt-1", pipelined=False) == "sent"
    await client.quit()
    assert server.count() == 1 and server.pipelined == 0


def rcpt_reply(reply: str):
    return lambda srv, stage, conn: reply if stage == "rcpt" else None


def mail_reply(reply: str):
    return lambda srv, stage, conn: reply if stage == "mail" else None


@pytest.mark.parametrize("rule,expected", [
    (None, "PermanentError smtp_rejected"),  # reject_recipient: 550 5.1.1 to RCPT, then 503 to the pipelined DATA
    (rcpt_reply("450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional "
                "messages"), "Throttled at rcpt"),
    (rcpt_reply("451 4.3.0 temporary local problem"), "TransientError"),
    (mail_reply("452 4.3.1 insufficient system storage"), "TransientError"),
    (mail_reply("450 4.7.1 Error: too much mail from 127.0.0.1"), "Throttled at mail"),
], ids=["rcpt-550", "rcpt-throttled", "rcpt-451", "mail-452", "mail-throttled"])
async def test_a_refused_envelope_is_classified_as_without_pipelining_and_the_connection_stays_usable(server, rule,
                                                                                                     expected):
    if rule is None:
        server.reject_recipient("nobody@example.com")
    else:
        server.command_rules.append(rule)
    for pipelined in (True, False):
        client = await connect(server.port)
        try:
            assert await outcome(client, "nobody@example.com", "evt-refused", pipelined) == expected
            if rule is not None:
                server.command_rules.remove(rule)
            # the session was reset (RSET): the same connection takes the next mail
            assert client.is_connected
            assert await outcome(client, "ada@example.com", f"evt-next-{pipelined}", pipelined) == "sent"
            if rule is not None:
                server.command_rules.append(rule)
        finally:
            await client.quit()
    assert sorted(m.event_id for m in server.received()) == ["evt-next-False", "evt-next-True"]
    assert server.pipelined == 2  # the refused and the accepted mail of the pipelined round


@pytest.mark.parametrize("reply,expected", [("554 5.6.0 message content rejected", "PermanentError smtp_rejected"),
                                            ("451 4.3.0 temporary local problem", "TransientError"),
                                            ("454 4.7.0 Throttling failure: Maximum sending rate exceeded.",
                                             "Throttled at data")])
async def test_a_refused_end_of_data_is_classified_as_without_pipelining(server, reply, expected):
    for pipelined in (True, False):
        server.fail_with(reply)
        client = await connect(server.port)
        try:
            assert await outcome(client, "ada@example.com", "evt-refused", pipelined) == expected
            server.fail_with(None)
            assert await outcome(client, "ada@example.com", f"evt-next-{pipelined}", pipelined) == "sent"
        finally:
            await client.quit()
    assert server.count() == 2


async def test_421_to_mail_closes_the_connection_and_is_throttling(server):
    server.command_rules.append(mail_reply("421 4.7.0 Try again later, closing connection."))
    for pipelined in (True, False):
        client = await connect(server.port)
        assert await outcome(client, "ada@example.com", "evt-1", pipelined) == "Throttled at mail"
        assert not client.is_connected
    assert server.count() == 0


async def test_a_connection_the_server_closed_is_a_lost_connection_not_a_refusal(server):
    client = await connect(server.port)
    assert await outcome(client, "ada@example.com", "evt-1", pipelined=True) == "sent"
    server.stop()  # cuts the session off
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await pipelining.sendmail(client, SENDER, ["ada@example.com"], message("evt-2"))
    assert not client.is_connected
    server.start()


async def test_through_a_real_postfix_pipelined_refusals_and_deliveries(postfix_relay, relay_sink):
    client = await connect(postfix_relay.port)
    try:
        assert await outcome(client, "refused@example.com", "pf-refused", pipelined=True) == \
            "PermanentError smtp_rejected"
        assert pipelining.advertised(client), "Postfix advertises PIPELINING"
        assert await outcome(client, "later@example.com", "pf-later", pipelined=True) == "Throttled at rcpt"
        for i in range(3):
            assert await outcome(client, f"user{i}@example.com", f"pf-{i}", pipelined=True) == "sent"
        # the same replies one command at a time, on the same connection
        assert await outcome(client, "refused@example.com", "pf-refused", pipelined=False) == \
            "PermanentError smtp_rejected"
        assert await outcome(client, "later@example.com", "pf-later", pipelined=False) == "Throttled at rcpt"
    finally:
        await client.quit()
    await eventually(lambda: {m.event_id for m in relay_sink.received()} >= {"pf-0", "pf-1", "pf-2"},
                     timeout=30, what="Postfix relayed the pipelined mails")
    assert not {"pf-refused", "pf-later"} & {m.event_id for m in relay_sink.received()}
    assert "improper command pipelining" not in postfix_relay.log()
