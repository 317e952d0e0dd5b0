"""SMTP over STARTTLS and implicit TLS, with AUTH, against aiosmtpd with a certificate made here (trustme)."""

from __future__ import annotations

import ssl

import pytest
import trustme

from email_service.wire import LAST_ERROR_HEADER
from tests.support.amqp import event_body, publish_raw, read_queue
from tests.support.ports import free_port
from tests.support.smtp_server import SmtpTestServer
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

CREDENTIALS = ("mailer", "s3cret-passw0rd")


@pytest.fixture
def ca(tmp_path):
    authority = trustme.CA()
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, str(path)


def tls_server(authority: trustme.CA, *, implicit: bool) -> SmtpTestServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    server = SmtpTestServer(free_port(), tls_context=context, implicit_tls=implicit, credentials=CREDENTIALS)
    server.start()
    return server


@pytest.mark.parametrize("security,implicit", [("starttls", False), ("tls", True)])
async def test_tls_and_auth(email_service_factory, vhost, ca, caplog, security, implicit):
    authority, ca_file = ca
    server = tls_server(authority, implicit=implicit)
    try:
        async with email_service_factory(smtp_port=server.port, SMTP_HOST="localhost", SMTP_SECURITY=security,
                                         SMTP_CA_FILE=ca_file, SMTP_USERNAME=CREDENTIALS[0],
                                         SMTP_PASSWORD=CREDENTIALS[1]) as consumer:
            await publish_raw(vhost.url, [event_body()])
            await eventually(lambda: server.count() == 1, what="the mail over TLS")
            # the server counts the mail at its end of data, the service once the 250 has reached it
            await eventually(lambda: consumer.count("sent") == 1, what="the service counting the mail sent")
    finally:
        server.stop()
    assert not any(CREDENTIALS[1] in str(record.__dict__) for record in caplog.records)


async def test_untrusted_certificate_is_refused_and_retried_not_sent(email_service_factory, vhost, ca):
    authority, _ = ca
    server = tls_server(authority, implicit=False)
    try:
        # No SMTP_CA_FILE: the test CA is not trusted, so verification (on by default) fails.
        async with email_service_factory(smtp_port=server.port, SMTP_HOST="localhost", SMTP_SECURITY="starttls",
                                         SMTP_USERNAME=CREDENTIALS[0], SMTP_PASSWORD=CREDENTIALS[1],
                                         MAX_ATTEMPTS="2", RETRY_DELAYS="0.2") as consumer:
            await publish_raw(vhost.url, [event_body()])
            await eventually(lambda: consumer.count("dead_lettered") == 1, what="retries exhausted")
            assert consumer.count("retried") == 1
    finally:
        server.stop()
    assert server.count() == 0
    [dead] = await read_queue(vhost.url, "email.welcome.dlq")
    assert "certificate" in dead.headers[LAST_ERROR_HEADER].lower() or "ssl" in dead.headers[LAST_ERROR_HEADER].lower()


async def test_wrong_password_is_transient_not_a_mass_dead_letter(email_service_factory, vhost, ca, caplog):
    authority, ca_file = ca
    server = tls_server(authority, implicit=False)
    try:
        async with email_service_factory(smtp_port=server.port, SMTP_HOST="localhost", SMTP_SECURITY="starttls",
                                         SMTP_CA_FILE=ca_file, SMTP_USERNAME="mailer", SMTP_PASSWORD="wrong",
                                         MAX_ATTEMPTS="3", RETRY_DELAYS="0.2") as consumer:
            await publish_raw(vhost.url, [event_body()])
            await eventually(lambda: consumer.count("retried") >= 1, what="a retry after 535")
            assert consumer.count("dead_lettered") == 0
    finally:
        server.stop()
    assert server.count() == 0
    logged = [str(record.__dict__) for record in caplog.records]
    assert any("535" in line for line in logged)
    assert not any("wrong" in line for line in logged)  # the password never reaches a log line


@pytest.mark.parametrize("configured", ["mx.acme.test", None])
async def test_ehlo_name_is_fully_qualified_never_localhost(email_service_factory, smtp_server, vhost, configured):
    extra = {"SMTP_HELO_HOSTNAME": configured} if configured else {}
    async with email_service_factory(**extra):
        await publish_raw(vhost.url, [event_body()])
        await eventually(lambda: smtp_server.count() == 1, what="the mail")
    helo = smtp_server.received()[0].helo
    assert helo == (configured or helo) and "." in helo and not helo.startswith("localhost"), helo


async def test_starttls_and_auth_then_pipelining(email_service_factory, vhost, ca):
    """PIPELINING as the server advertises it after STARTTLS and AUTH (the EHLO that counts is the one over TLS)."""
    authority, ca_file = ca
    server = tls_server(authority, implicit=False)
    try:
        async with email_service_factory(smtp_port=server.port, SMTP_HOST="localhost", SMTP_SECURITY="starttls",
                                         SMTP_CA_FILE=ca_file, SMTP_USERNAME=CREDENTIALS[0],
                                         SMTP_PASSWORD=CREDENTIALS[1], CONCURRENCY="1") as consumer:
            await publish_raw(vhost.url, [event_body() for _ in range(3)])
            await eventually(lambda: server.count() == 3, what="three mails over TLS")
            assert consumer.count("sent") == 3
    finally:
        server.stop()
    assert server.pipelined == 3  # MAIL FROM and RCPT TO came in one write, over the TLS session
