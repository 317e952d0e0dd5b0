"""email-service against the real RabbitMQ and a real SMTP server: delivery, retries, dead letters, poison."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client import generate_latest

from email_service.wire import ATTEMPTS_MADE_HEADER, DEAD_LETTERED_AT_HEADER, LAST_ERROR_HEADER, REASON_HEADER
from tests.support.amqp import event_body, publish_raw, read_queue, ready_count
from tests.support.ports import free_port
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

DLQ = "email.welcome.dlq"


@pytest.mark.parametrize("locale,subject,greeting", [
    ("en", "Welcome to Acme!", "Hi Ada Lovelace,"),
    ("zh-CN", "欢迎加入 Acme！", "Ada Lovelace，您好："),
])
async def test_signup_to_mailbox(producer_factory, email_service_factory, smtp_server, locale, subject, greeting):
    async with email_service_factory() as consumer, producer_factory() as producer:
        await producer.wait_ready()
        response = await producer.signup("ada@example.com", "Ada Lovelace", locale)
        assert response.status_code == 202, response.text
        event_id = response.json()["event_id"]
        await eventually(lambda: smtp_server.count() == 1, what="the welcome email")
        await eventually(lambda: consumer.count("sent") == 1, what="the sent metric")
    [mail] = smtp_server.received()
    msg = mail.message
    assert mail.mail_from == "welcome@acme.test" and mail.rcpt_tos == ["ada@example.com"]
    assert msg["Subject"] == subject
    assert msg["From"] == "Acme <welcome@acme.test>"
    assert msg["To"].addresses[0].addr_spec == "ada@example.com"
    assert msg["Message-ID"] == f"<{event_id}@acme.test>"
    text, html = msg.get_payload()
    assert greeting in text.get_content()
    assert html.get_content_type() == "text/html" and "Ada Lovelace" in html.get_content()


async def test_transient_4xx_is_retried_through_the_delay_queues_and_delivered_once(email_service_factory, smtp_server,
                                                                                     vhost):
    smtp_server.defer_next(2, "451 4.3.0 temporary local problem")
    async with email_service_factory() as consumer:
        await publish_raw(vhost.url, [event_body()])
        await eventually(lambda: smtp_server.count() == 1, timeout=15, what="delivery after two deferrals")
        await eventually(lambda: consumer.count("sent") == 1, what="the sent metric")
        assert consumer.count("retried") == 2
        assert smtp_server.deferred == 2
    assert smtp_server.count() == 1
    assert await read_queue(vhost.url, DLQ) == []


async def test_permanent_5xx_is_dead_lettered_at_once_with_its_reason(email_service_factory, smtp_server, vhost):
    smtp_server.reject_recipient("nobody@example.com", "550 5.1.1 no such user here")
    body = event_body(email="nobody@example.com")
    async with email_service_factory() as consumer:
        await publish_raw(vhost.url, [body], message_id="m-1", content_type="application/json")
        await eventually(lambda: consumer.count("dead_lettered") == 1, what="the dead letter")
        assert consumer.count("retried") == 0
    [dead] = await read_queue(vhost.url, DLQ)
    assert dead.body == body  # the original body, untouched
    assert dead.headers[REASON_HEADER] == "smtp_rejected"
    assert "550" in dead.headers[LAST_ERROR_HEADER] and "no such user" in dead.headers[LAST_ERROR_HEADER]
    assert dead.headers[ATTEMPTS_MADE_HEADER] == 1
    assert dead.headers[DEAD_LETTERED_AT_HEADER].endswith("Z")
    assert dead.message_id == "m-1" and dead.content_type == "application/json"


async def test_retries_exhausted_are_dead_lettered_with_the_attempt_count(email_service_factory, smtp_server, vhost):
    smtp_server.defer_next(1000, "451 4.3.0 temporary local problem")
    async with email_service_factory(MAX_ATTEMPTS="3", RETRY_DELAYS="0.2,0.3") as consumer:
        await publish_raw(vhost.url, [event_body()])
        await eventually(lambda: consumer.count("dead_lettered") == 1, timeout=15, what="the dead letter")
        assert consumer.count("retried") == 2
    [dead] = await read_queue(vhost.url, DLQ)
    assert dead.headers[REASON_HEADER] == "retries_exhausted"
    assert dead.headers[ATTEMPTS_MADE_HEADER] == 3
    assert "451" in dead.headers[LAST_ERROR_HEADER]
    assert smtp_server.count() == 0 and smtp_server.deferred == 3


async def test_throttling_replies_defer_the_mail_without_using_up_attempts(email_service_factory, smtp_server, vhost):
    # more throttling replies than MAX_ATTEMPTS: none of them counts as an attempt
    smtp_server.defer_next(5, "454 4.7.0 Throttling failure: Maximum sending rate exceeded.")
    async with email_service_factory(MAX_ATTEMPTS="2") as consumer:
        await publish_raw(vhost.url, [event_body()])
        await eventually(lambda: smtp_server.count() == 1, timeout=20, what="delivery after five throttling replies")
        await eventually(lambda: consumer.count("sent") == 1, what="the sent metric")
        assert consumer.count("deferred") >= 5 and consumer.count("retried") == 0  # more: held back by the pace
        assert consumer.metrics.smtp_throttled.labels("data")._value.get() == 5
    assert await read_queue(vhost.url, DLQ) == []


async def test_mail_throttled_past_the_deadline_is_dead_lettered_as_deadline_exceeded(email_service_factory,
                                                                                        smtp_server, vhost):
    smtp_server.defer_next(10_000, "421 4.7.0 Try again later, closing connection.")
    async with email_service_factory(RETRY_DELAYS="0.2", DELIVERY_DEADLINE_SECONDS="1") as consumer:
        await publish_raw(vhost.url, [event_body()])
        await eventually(lambda: consumer.count("dead_lettered") == 1, timeout=15, what="the dead letter")
        assert consumer.count("deferred") >= 2 and consumer.count("retried") == 0
    [dead] = await read_queue(vhost.url, DLQ)
    assert dead.headers[REASON_HEADER] == "deadline_exceeded"
    assert dead.headers[ATTEMPTS_MADE_HEADER] == 1
    assert "421" in dead.headers[LAST_ERROR_HEADER] and dead.headers["x-deferred-since"].endswith("Z")


POISON = {
    "not-json": (b"hello, world", "undecodable"),
    "invalid-utf8": (b'{"name": "\xff\xfe"}', "undecodable"),
    "empty": (b"", "undecodable"),
    "wrong-schema-version": (json.dumps({**json.loads(event_body()), "schema_version": 99}).encode(),
                             "unsupported_schema"),
    "wrong-shape": (b'{"hello": "world"}', "invalid_event"),
    "json-array": (b"[1, 2, 3]", "invalid_event"),
    "very-large": (b'{"pad": "' + b"x" * 2_000_000 + b'"}', "invalid_event"),
    "crlf-in-name": (event_body(name="Eve\r\nBcc: victim@example.com"), "invalid_event"),
}


async def test_poison_messages_are_dead_lettered_while_valid_ones_are_delivered(email_service_factory, smtp_server,
                                                                                vhost):
    good = [event_body(email=f"user{i}@example.com") for i in range(6)]
    mixed = []
    for i, (body, _) in enumerate(POISON.values()):
        mixed += [body, good[i % len(good)]] if i < len(good) else [body]
    async with email_service_factory() as consumer:
        await publish_raw(vhost.url, mixed)
        await eventually(lambda: consumer.count("dead_lettered") == len(POISON) and smtp_server.count() == len(good),
                         timeout=15, what="all poison dead-lettered and all good mail sent")
        assert consumer.service.consumer.ready
    dead = await read_queue(vhost.url, DLQ)
    assert sorted(m.body for m in dead) == sorted(body for body, _ in POISON.values())
    reasons = {m.body: m.headers[REASON_HEADER] for m in dead}
    for name, (body, reason) in POISON.items():
        assert reasons[body] == reason, name
    assert sorted(m.rcpt_tos[0] for m in smtp_server.received()) == sorted(f"user{i}@example.com" for i in range(6))


async def test_html_injection_in_the_name_is_escaped(email_service_factory, smtp_server, vhost):
    name = '<img src=x onerror="alert(1)"> & <b>'
    async with email_service_factory():
        await publish_raw(vhost.url, [event_body(name=name)])
        await eventually(lambda: smtp_server.count() == 1, what="the mail")
    msg = smtp_server.received()[0].message
    html = msg.get_payload()[1].get_content()
    assert "<img" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &lt;b&gt;" in html
    assert msg["To"].addresses[0].display_name == name


async def test_many_messages_in_flight_at_once(email_service_factory, smtp_server, vhost):
    smtp_server.delay = 0.3
    async with email_service_factory(CONCURRENCY="8", SMTP_POOL_SIZE="8") as consumer:
        await publish_raw(vhost.url, [event_body(email=f"u{i}@example.com") for i in range(16)])
        await eventually(lambda: smtp_server.count() == 16, timeout=20, what="16 mails")
        assert consumer.service.pool.open_connections <= 8
    assert smtp_server.max_active >= 4, "a slow SMTP exchange must not hold up the other messages"


async def test_health_readiness_and_metrics(email_service_factory):
    async with email_service_factory() as consumer, httpx.AsyncClient(base_url=consumer.url) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        metrics = (await client.get("/metrics")).text
        for line in ("email_consumer_up 1.0", 'email_messages_total{outcome="sent"} 0.0',
                     'email_dead_letters_total{reason="smtp_rejected"} 0.0', "email_smtp_pool_size 16.0",
                     "email_in_progress 0.0", "email_send_seconds_bucket", "email_end_to_end_seconds_bucket"):
            assert line in metrics, line
        assert (await client.get("/nope")).status_code == 404
    # after stop, the consumer is gone
    assert "email_consumer_up 0.0" in generate_latest(consumer.metrics.registry).decode()


async def test_topology_is_declared_idempotently_by_several_copies(email_service_factory, vhost, smtp_server):
    async with email_service_factory(), email_service_factory():
        await publish_raw(vhost.url, [event_body(email=f"u{i}@example.com") for i in range(10)])
        await eventually(lambda: smtp_server.count() == 10, what="10 mails from two consumers")
    for name in ("email.welcome", "email.welcome.dlq", "email.welcome.retry.0.2s", "email.welcome.retry.0.4s",
                 "email.welcome.retry.0.8s"):
        assert await ready_count(vhost.url, name) == 0  # passive declare: fails if the queue does not exist


async def test_smtp_down_means_retries_not_losses(email_service_factory, smtp_server, vhost):
    closed_port = free_port()
    async with email_service_factory(smtp_port=closed_port, MAX_ATTEMPTS="2", RETRY_DELAYS="0.2") as consumer:
        await publish_raw(vhost.url, [event_body()])
        await eventually(lambda: consumer.count("dead_lettered") == 1, timeout=10, what="retries then dead letter")
        assert consumer.count("retried") == 1
    [dead] = await read_queue(vhost.url, DLQ)
    assert dead.headers[REASON_HEADER] == "retries_exhausted"
    assert "Connect" in dead.headers[LAST_ERROR_HEADER] or "refused" in dead.headers[LAST_ERROR_HEADER].lower()


async def test_concurrent_consumers_never_lose_under_retries(email_service_factory, smtp_server, vhost):
    smtp_server.defer_next(10)
    async with email_service_factory(CONCURRENCY="4"):
        await publish_raw(vhost.url, [event_body(email=f"u{i}@example.com") for i in range(30)])
        await eventually(lambda: smtp_server.count() == 30, timeout=20, what="30 mails despite 10 deferrals")
    assert len(set(smtp_server.message_ids())) == 30
