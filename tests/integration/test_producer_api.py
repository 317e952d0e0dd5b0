"""producer-service against the real RabbitMQ: the 202 path, every rejection, outages, reconnects, idempotency."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone

import aio_pika
import pytest

from producer_service.app import REQUEST_ID_HEADER
from producer_service.publisher import CORRELATION_ID_HEADER
from tests.support.ports import free_port
from tests.support.waits import eventually

pytestmark = pytest.mark.integration


async def probe_queue(url: str):
    """An exclusive queue bound like the email service's queue, to see exactly what was published."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("signups", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(exchange, "user.signed_up")
    return connection, queue


async def drain(queue, expect: int | None = None, timeout: float = 3.0) -> list:
    messages = []
    if expect is not None:
        async def have_all() -> bool:
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                messages.append(message)
            return len(messages) >= expect
        await eventually(have_all, timeout=timeout, what=f"{expect} published events")
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        messages.append(message)
    return messages


async def test_accepted_signup_is_a_confirmed_persistent_event(producer_factory, vhost):
    connection, queue = await probe_queue(vhost.url)
    try:
        async with producer_factory() as producer:
            await producer.wait_ready()
            response = await producer.signup("ada@example.com", "Ada Lovelace", "zh-CN",
                                             headers={"X-Request-ID": "req-123"})
            assert response.status_code == 202, response.text
            event_id = response.json()["event_id"]
            assert response.headers[REQUEST_ID_HEADER] == "req-123"
            [message] = await drain(queue, expect=1)
    finally:
        await connection.close()
    body = json.loads(message.body)
    assert body["event_id"] == event_id
    assert body["event_type"] == "user.signed_up"
    assert body["schema_version"] == 1
    assert body["user"] == {"email": "ada@example.com", "name": "Ada Lovelace", "locale": "zh-CN"}
    occurred = datetime.fromisoformat(body["occurred_at"])
    assert occurred.tzinfo is not None and abs((datetime.now(timezone.utc) - occurred).total_seconds()) < 60
    assert body["occurred_at"].endswith("Z")
    assert message.message_id == event_id
    assert message.content_type == "application/json"
    assert message.type == "user.signed_up"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.timestamp is not None
    assert message.correlation_id == "req-123"
    assert message.headers[CORRELATION_ID_HEADER] == "req-123"
    assert message.routing_key == "user.signed_up"


async def test_locale_defaults_to_english_and_request_id_is_generated(producer_factory, vhost):
    connection, queue = await probe_queue(vhost.url)
    try:
        async with producer_factory() as producer:
            await producer.wait_ready()
            response = await producer.signup("bob@example.com", "Bob", locale=None)
            assert response.status_code == 202
            [message] = await drain(queue, expect=1)
    finally:
        await connection.close()
    assert json.loads(message.body)["user"]["locale"] == "en"
    assert message.headers[CORRELATION_ID_HEADER] == response.headers[REQUEST_ID_HEADER]


INVALID_BODIES = [
    pytest.param({"email": "not-an-email", "name": "Ada"}, 422, "email", id="bad-email"),
    pytest.param({"email": "ada@", "name": "Ada"}, 422, "email", id="email-no-domain"),
    pytest.param({"email": "a\r\nBcc: x@evil.test@example.com", "name": "Ada"}, 422, "email", id="email-crlf"),
    pytest.param({"email": "ada@example.com", "name": ""}, 422, "name", id="empty-name"),
    pytest.param({"email": "ada@example.com", "name": "   "}, 422, "name", id="blank-name"),
    pytest.param({"email": "ada@example.com", "name": "x" * 101}, 422, "name", id="long-name"),
    pytest.param({"email": "ada@example.com", "name": "Ada\r\nBcc: victim@example.com"}, 422, "name", id="name-crlf"),
    pytest.param({"email": "ada@example.com", "name": "Ada\nLovelace"}, 422, "name", id="name-lf"),
    pytest.param({"email": "ada@example.com", "name": "Ada\x00"}, 422, "name", id="name-nul"),
    pytest.param({"email": "ada@example.com", "name": 42}, 422, "name", id="name-not-string"),
    pytest.param({"email": "ada@example.com", "name": "Ada", "locale": "fr"}, 422, "locale", id="unknown-locale"),
    pytest.param({"email": "ada@example.com", "name": "Ada", "admin": True}, 422, "admin", id="unknown-field"),
    pytest.param({"name": "Ada"}, 422, "email", id="missing-email"),
    pytest.param({"email": "ada@example.com"}, 422, "name", id="missing-name"),
    pytest.param(["ada@example.com"], 422, "body", id="not-an-object"),
]


@pytest.mark.parametrize("payload,status,field", INVALID_BODIES)
async def test_invalid_signups_are_rejected_naming_the_field(producer_factory, module_vhost, payload, status, field):
    connection, queue = await probe_queue(module_vhost.url)  # exclusive: gone with the connection
    try:
        async with producer_factory(module_vhost.url) as producer:
            await producer.wait_ready()
            response = await producer.client.post("/v1/signups", json=payload)
            assert response.status_code == status, response.text
            body = response.json()
            assert body["error"] == "validation_failed"
            assert field in [d["field"] for d in body["detail"]], body
            assert await drain(queue) == []
            metrics = (await producer.client.get("/metrics")).text
            assert 'producer_signups_total{outcome="invalid"} 1.0' in metrics
    finally:
        await connection.close()


RAW_REQUESTS = [
    pytest.param(b'{"email": "ada@example.com", "name": "Ada"', "application/json", 400, "invalid_json",
                 id="broken-json"),
    pytest.param(b"\xff\xfe{}", "application/json", 400, "invalid_encoding", id="not-utf8"),
    pytest.param(b'{"email": "ada@example.com", "name": "Ada"}', "text/plain", 415, "unsupported_media_type",
                 id="wrong-content-type"),
    pytest.param(b'{"email": "ada@example.com", "name": "Ada"}', "application/json; charset=latin-1", 415,
                 "unsupported_media_type", id="wrong-charset"),
    pytest.param(b"", "application/json", 400, "invalid_json", id="empty-body"),
    pytest.param(b'{"email": "ada@example.com", "name": "A", "name": "B"}', "application/json", 400, "invalid_json",
                 id="duplicate-key"),
    pytest.param(b'{"email": "ada@example.com", "name": "' + b"x" * 20000 + b'"}', "application/json", 413,
                 "body_too_large", id="too-large"),
]


@pytest.mark.parametrize("raw,content_type,status,error", RAW_REQUESTS)
async def test_malformed_requests_get_clear_errors_and_publish_nothing(producer_factory, module_vhost, raw,
                                                                        content_type, status, error):
    connection, queue = await probe_queue(module_vhost.url)
    try:
        async with producer_factory(module_vhost.url) as producer:
            await producer.wait_ready()
            response = await producer.client.post("/v1/signups", content=raw, headers={"Content-Type": content_type})
            assert response.status_code == status, response.text
            assert response.json()["error"] == error
            assert await drain(queue) == []
    finally:
        await connection.close()


async def test_body_over_the_limit_is_refused_even_without_content_length(producer_factory, vhost):
    async with producer_factory(MAX_BODY_BYTES="1024") as producer:
        await producer.wait_ready()

        async def chunks():
            yield b'{"email": "ada@example.com", "name": "'
            yield b"x" * 2048
            yield b'"}'

        response = await producer.client.post("/v1/signups", content=chunks(),
                                              headers={"Content-Type": "application/json"})
        assert response.status_code == 413


async def test_broker_unreachable_gives_503_with_retry_after_and_not_ready(producer_factory):
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    async with producer_factory(amqp_url=closed) as producer:
        ready = await producer.client.get("/readyz")
        assert ready.status_code == 503
        response = await producer.signup("ada@example.com")
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"] == "broker_unavailable"
        assert (await producer.client.get("/healthz")).status_code == 200
        metrics = (await producer.client.get("/metrics")).text
        assert 'producer_signups_total{outcome="unavailable"} 1.0' in metrics
        assert "producer_broker_connected 0.0" in metrics


async def test_unroutable_event_is_never_accepted(producer_factory):
    # No queue is bound to the exchange in this fresh vhost: the broker returns the mandatory publish.
    async with producer_factory() as producer:
        await producer.wait_ready()
        response = await producer.signup("ada@example.com")
        assert response.status_code == 503
        assert "unroutable" in response.json()["message"]


async def test_reconnects_after_connections_are_force_closed(producer_factory, vhost):
    # A durable queue (not an exclusive one: the forced close would take that away with the test's connection).
    connection = await aio_pika.connect(vhost.url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("signups", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue("probe", durable=True)
    await queue.bind(exchange, "user.signed_up")
    await connection.close()
    async with producer_factory() as producer:
        await producer.wait_ready()
        assert (await producer.signup("before@example.com")).status_code == 202
        connects = producer.publisher.connects
        vhost.close_connections()
        await eventually(lambda: producer.publisher.connects > connects and producer.publisher.ready, timeout=15,
                         what="the producer to reconnect")
        assert (await producer.client.get("/readyz")).status_code == 200
        response = await producer.signup("after@example.com")
        assert response.status_code == 202, response.text
    from tests.support.amqp import ready_count

    assert await ready_count(vhost.url, "probe") == 2


async def test_idempotency_key_gives_the_same_event_id(producer_factory, vhost):
    connection, queue = await probe_queue(vhost.url)
    try:
        async with producer_factory() as producer:
            await producer.wait_ready()
            key = f"signup-{uuid.uuid4()}"
            first = await producer.signup("ada@example.com", headers={"Idempotency-Key": key})
            second = await producer.signup("ada@example.com", headers={"Idempotency-Key": key})
            other = await producer.signup("ada@example.com", headers={"Idempotency-Key": key + "-other"})
            bad = await producer.signup("ada@example.com", headers={"Idempotency-Key": "x" * 300})
            messages = await drain(queue, expect=3)
    finally:
        await connection.close()
    assert first.status_code == second.status_code == other.status_code == 202
    assert first.json()["event_id"] == second.json()["event_id"] != other.json()["event_id"]
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "Idempotency-Key"
    assert [m.message_id for m in messages].count(first.json()["event_id"]) == 2


async def test_health_readiness_metrics_and_openapi(producer_factory):
    async with producer_factory() as producer:
        await producer.wait_ready()
        assert (await producer.client.get("/healthz")).json() == {"status": "ok"}
        assert (await producer.client.get("/readyz")).status_code == 200
        metrics = await producer.client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        for name in ("producer_signups_total", "producer_publish_seconds_bucket",
                     "producer_http_request_duration_seconds_bucket", "producer_broker_connected 1.0"):
            assert name in metrics.text
        spec = (await producer.client.get("/openapi.json")).json()
        assert "/v1/signups" in spec["paths"]
        missing = await producer.client.get("/nope")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        wrong_method = await producer.client.get("/v1/signups")
        assert wrong_method.status_code == 405


async def test_concurrent_signups_are_all_confirmed(producer_factory, vhost):
    connection, queue = await probe_queue(vhost.url)
    try:
        async with producer_factory() as producer:
            await producer.wait_ready()
            responses = await asyncio.gather(*(producer.signup(f"user{i}@example.com") for i in range(200)))
            assert [r.status_code for r in responses] == [202] * 200
            messages = await drain(queue, expect=200)
    finally:
        await connection.close()
    assert {m.message_id for m in messages} == {r.json()["event_id"] for r in responses}


async def test_bad_configuration_names_the_variable():
    import subprocess
    import sys
    from pathlib import Path

    binary = Path(sys.executable).parent / "producer-service"
    result = subprocess.run([str(binary)], env={"HTTP_PORT": "eighty", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "HTTP_PORT" in result.stderr
    result = subprocess.run([str(binary)], env={"AMQP_URL": "http://user:hunter2@host/", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "AMQP_URL" in result.stderr and "hunter2" not in result.stderr


async def test_a_failure_nobody_expected_answers_500_and_is_no_signup_outcome(producer_factory, monkeypatch):
    async with producer_factory() as producer:
        await producer.wait_ready()

        async def broken(event, correlation_id):
            raise RuntimeError("a bug in the publisher")

        monkeypatch.setattr(producer.publisher, "publish", broken)
        response = await producer.signup("ada@example.com", headers={"X-Request-ID": "req-500"})
        assert response.status_code == 500 and response.text == "Internal Server Error"
        assert response.headers[REQUEST_ID_HEADER] == "req-500"
        metrics = (await producer.client.get("/metrics")).text
    assert 'producer_http_request_duration_seconds_count{method="POST",route="/v1/signups",status_class="5xx"} 1.0' \
        in metrics
    for outcome in ("accepted", "invalid", "unavailable"):
        assert f'producer_signups_total{{outcome="{outcome}"}} 0.0' in metrics
