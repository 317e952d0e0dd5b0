"""The delivery record through every path a mail takes, read the way support reads it: GET /v1/signups/{event_id}
on the producer. Real RabbitMQ, Redis and SMTP; the failures are the SMTP server's real replies."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from tests.support.amqp import declare_topology, event_body, publish_raw
from tests.support.delivery_status import email_status_env, lookup, producer_status_env, wait_for_status
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

DAY = 24 * 3600


@contextlib.asynccontextmanager
async def pipeline(producer_factory, email_service_factory, key_space, *, consumer: bool = True, **email_env: str):
    """The producer with the lookup on and (unless consumer=False) an email service, both on this test's keys."""
    async with contextlib.AsyncExitStack() as stack:
        service = None
        if consumer:
            service = await stack.enter_async_context(
                email_service_factory(**email_status_env(key_space.url, key_space.prefix, **email_env)))
        producer = await stack.enter_async_context(
            producer_factory(**producer_status_env(key_space.url, key_space.prefix)))
        await producer.wait_ready()
        yield producer, service


async def signup(producer, email: str = "ada@example.com", locale: str = "en") -> str:
    response = await producer.signup(email, "Ada Lovelace", locale)
    assert response.status_code == 202, response.text
    return response.json()["event_id"]


def assert_no_personal_data(*texts: str) -> None:
    for text in texts:
        assert "@example.com" not in text and "Ada" not in text and "Lovelace" not in text, text


async def test_sent_at_once(producer_factory, email_service_factory, smtp_server, key_space):
    async with pipeline(producer_factory, email_service_factory, key_space) as (producer, _):
        event_id = await signup(producer, locale="zh-CN")
        record = await wait_for_status(producer.client, event_id, "sent")
        response = await lookup(producer.client, event_id)
    assert record["event_id"] == event_id and record["attempts"] == 1 and record["locale"] == "zh-CN"
    assert record["reply_code"] == 250 and record["reply_text"] == "2.0.0 accepted"
    assert record["message_id"] == f"<{event_id}@acme.test>"
    assert record["first_update"] <= record["sent_at"] <= record["last_update"]
    assert not {"next_tier", "reason", "last_error"} & set(record)
    assert_no_personal_data(response.text)


async def test_queued_is_written_by_the_producer(producer_factory, email_service_factory, key_space, vhost):
    await declare_topology(vhost.url)  # routable, and nobody consumes
    async with pipeline(producer_factory, email_service_factory, key_space, consumer=False) as (producer, _):
        event_id = await signup(producer, locale="zh-CN")
        record = await wait_for_status(producer.client, event_id, "queued")
    assert record["locale"] == "zh-CN" and record["first_update"] == record["last_update"]
    assert set(record) == {"event_id", "status", "locale", "first_update", "last_update"}


async def test_retried_then_sent(producer_factory, email_service_factory, smtp_server, key_space):
    smtp_server.defer_next(2, "451 4.3.0 temporary local problem")
    async with pipeline(producer_factory, email_service_factory, key_space, RETRY_DELAYS="0.2,4") as (producer, _):
        event_id = await signup(producer)
        waiting = await wait_for_status(producer.client, event_id, "retrying", attempts=2)
        sent = await wait_for_status(producer.client, event_id, "sent", timeout=20)
    assert waiting["next_tier"] == "email.welcome.retry.4s" and "451" in waiting["last_error"]
    assert sent["attempts"] == 3 and "next_tier" not in sent and smtp_server.count() == 1


async def test_rejected_5xx_is_dead_lettered_with_the_reply(producer_factory, email_service_factory, smtp_server,
                                                           key_space):
    smtp_server.reject_recipient("gone@example.com", "550 5.1.1 no such user here")
    async with pipeline(producer_factory, email_service_factory, key_space) as (producer, _):
        event_id = await signup(producer, "gone@example.com")
        record = await wait_for_status(producer.client, event_id, "dead_lettered")
    assert record["reason"] == "smtp_rejected" and record["attempts"] == 1
    assert "550" in record["last_error"] and "no such user here" in record["last_error"]
    assert "sent_at" not in record


async def test_retries_exhausted(producer_factory, email_service_factory, smtp_server, key_space):
    smtp_server.defer_next(2, "451 4.3.0 temporary local problem")
    async with pipeline(producer_factory, email_service_factory, key_space, MAX_ATTEMPTS="2",
                        RETRY_DELAYS="0.2") as (producer, _):
        event_id = await signup(producer)
        record = await wait_for_status(producer.client, event_id, "dead_lettered")
    assert record["reason"] == "retries_exhausted" and record["attempts"] == 2 and "451" in record["last_error"]


async def test_duplicate_delivery_is_skipped(producer_factory, email_service_factory, smtp_server, key_space, vhost):
    event_id = str(uuid.uuid4())
    async with pipeline(producer_factory, email_service_factory, key_space) as (producer, consumer):
        await publish_raw(vhost.url, [event_body(event_id=event_id)], message_id=event_id)
        sent = await wait_for_status(producer.client, event_id, "sent")
        await publish_raw(vhost.url, [event_body(event_id=event_id)], message_id=event_id)
        skipped = await wait_for_status(producer.client, event_id, "duplicate_skipped")
        await eventually(lambda: consumer.count("duplicate") == 1, what="the duplicate counted")
    assert skipped["sent_at"] == sent["sent_at"] and skipped["reply_text"] == sent["reply_text"]
    assert smtp_server.count() == 1


async def test_throttled_deferred_then_sent(producer_factory, email_service_factory, smtp_server, key_space):
    smtp_server.defer_next(1, "421 4.7.0 too many messages, slow down")
    async with pipeline(producer_factory, email_service_factory, key_space,
                        THROTTLE_DELAY_SECONDS="3") as (producer, _):
        event_id = await signup(producer)
        deferred = await wait_for_status(producer.client, event_id, "deferred")
        sent = await wait_for_status(producer.client, event_id, "sent", timeout=20)
    assert deferred["next_tier"] == "email.welcome.deferred.3s" and "421" in deferred["last_error"]
    assert deferred["attempts"] == sent["attempts"] == 1  # a deferral is not an attempt
    assert smtp_server.count() == 1


async def test_records_expire_after_the_ttl(producer_factory, email_service_factory, smtp_server, key_space):
    short = {"DELIVERY_STATUS_TTL_SECONDS": "2", "DEDUP_ENABLED": "false"}
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            email_service_factory(**email_status_env(key_space.url, key_space.prefix, **short)))
        producer = await stack.enter_async_context(producer_factory(**producer_status_env(
            key_space.url, key_space.prefix, DELIVERY_STATUS_TTL_SECONDS="2")))
        await producer.wait_ready()
        event_id = await signup(producer)
        await wait_for_status(producer.client, event_id, "sent")

        async def gone() -> bool:
            return (await lookup(producer.client, event_id)).status_code == 404

        await eventually(gone, timeout=15, interval=0.2, what="the record expired")
    assert not key_space.keys()


async def test_the_same_idempotency_key_across_the_secret_keeps_one_mail(producer_factory, email_service_factory,
                                                                         smtp_server, key_space, vhost):
    """A key first posted before IDEMPOTENCY_SECRET (its legacy id delivered under the previous version's dedup key)
    and again after: a new id, but the email service sees the legacy delivery and sends nothing."""
    from producer_service.events import legacy_event_id_for

    key = f"signup-{uuid.uuid4()}"
    key_space.put(f"delivered:{legacy_event_id_for(key)}", "1", ttl=DAY)  # the previous version's dedup key
    async with pipeline(producer_factory, email_service_factory, key_space) as (producer, consumer):
        response = await producer.signup("ada@example.com", headers={"Idempotency-Key": key})
        event_id = response.json()["event_id"]
        assert event_id != legacy_event_id_for(key) and event_id[14] == "8"  # HMAC-derived: UUID version 8
        await wait_for_status(producer.client, event_id, "duplicate_skipped")
        old = await lookup(producer.client, legacy_event_id_for(key))
    assert old.json() == {"event_id": legacy_event_id_for(key), "status": "sent", "legacy": True}
    assert smtp_server.count() == 0 and consumer.count("duplicate") == 1
