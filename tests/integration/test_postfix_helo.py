"""SMTP_HELO_HOSTNAME against a real Postfix that enforces a fully qualified, valid HELO name (as many relays do):
email-service with its default name gets through, a client calling itself `localhost` does not."""

from __future__ import annotations

import uuid
from email.message import EmailMessage

import aiosmtplib
import pytest

from email_service.config import default_helo_hostname
from tests.support.amqp import event_body, publish_raw
from tests.support.env import MAIL_FROM
from tests.support.waits import eventually

HELO_RESTRICTIONS = "reject_non_fqdn_helo_hostname, reject_invalid_helo_hostname"
POSTFIX_LIMITS = {"extra": {"smtpd_helo_required": "yes", "smtpd_helo_restrictions": HELO_RESTRICTIONS}}


async def test_the_default_helo_name_passes_a_relay_that_rejects_non_fqdn_names(email_service_factory, vhost,
                                                                                postfix_relay, relay_sink):
    event_id = str(uuid.uuid4())
    async with email_service_factory(smtp_port=postfix_relay.port) as consumer:  # SMTP_HELO_HOSTNAME unset
        await publish_raw(vhost.url, [event_body(email="ada@example.com", event_id=event_id)], message_id=event_id)
        await eventually(lambda: consumer.count("sent") == 1 or consumer.count("dead_lettered") == 1, timeout=30,
                         what="the mail accepted (or refused) by Postfix")
        assert consumer.count("sent") == 1, postfix_relay.log()[-2000:]
    await eventually(lambda: any(m.event_id == event_id for m in relay_sink.received()), timeout=30,
                     what="the mail relayed on by Postfix")
    relayed = next(m for m in relay_sink.received() if m.event_id == event_id)
    helo = default_helo_hostname(MAIL_FROM.rpartition("<")[2].rstrip(">"))
    assert "localhost" not in helo
    assert str(relayed.message["Received"]).startswith(f"from {helo} "), relayed.message["Received"]


async def test_a_client_that_says_localhost_is_refused(postfix_relay):
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "welcome@acme.test", "ada@example.com", "hello"
    mail.set_content("hello")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await aiosmtplib.send(mail, hostname="127.0.0.1", port=postfix_relay.port, local_hostname="localhost")
    (reply,) = refused.value.recipients
    assert reply.code == 504 and "need fully-qualified hostname" in reply.message, reply
