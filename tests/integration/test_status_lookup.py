"""Looking a record up: the producer's route (token, answers, no personal data), `email-service status` and its
exit codes, the dlq commands' states and --max-replays, and Redis stopped in the middle of a run."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.support.amqp import declare_topology, event_body, publish_raw, read_queue
from tests.support.delivery_status import (
    STATUS_TOKEN,
    email_cli,
    email_status_env,
    lookup,
    producer_status_env,
    wait_for_status,
)
from tests.support.ports import free_port
from tests.support.prometheus import Metrics
from tests.support.redis_server import PrivateRedis
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

DLQ = "email.welcome.dlq"


def no_personal_data(response: httpx.Response) -> bool:
    return not any(part in response.text for part in ("@example.com", "Ada", "Lovelace"))


async def test_route_answers_200_404_400_401_and_never_personal_data(producer_factory, email_service_factory,
                                                                      smtp_server, key_space):
    async with email_service_factory(**email_status_env(key_space.url, key_space.prefix)), \
            producer_factory(**producer_status_env(key_space.url, key_space.prefix)) as producer:
        await producer.wait_ready()
        event_id = (await producer.signup("ada@example.com", "Ada Lovelace")).json()["event_id"]
        await wait_for_status(producer.client, event_id, "sent")
        answers = {
            "found": await lookup(producer.client, event_id),
            "unknown": await lookup(producer.client, str(uuid.uuid4())),
            "malformed": await lookup(producer.client, "not-an-id"),
            "uppercase": await lookup(producer.client, event_id.upper()),
            "no token": await lookup(producer.client, event_id, headers={}),
            "wrong token": await lookup(producer.client, event_id, {"Authorization": f"Bearer {STATUS_TOKEN}x"}),
            "basic": await lookup(producer.client, event_id, {"Authorization": f"Basic {STATUS_TOKEN}"}),
            "no token, unknown id": await lookup(producer.client, str(uuid.uuid4()), headers={}),
        }
    statuses = {name: response.status_code for name, response in answers.items()}
    assert statuses == {"found": 200, "unknown": 404, "malformed": 400, "uppercase": 400, "no token": 401,
                        "wrong token": 401, "basic": 401, "no token, unknown id": 401}
    assert answers["no token"].headers["WWW-Authenticate"].startswith("Bearer")
    assert all(no_personal_data(r) for r in answers.values())
    assert all(r.json()["error"] for name, r in answers.items() if name != "found")


async def test_route_without_redis_or_token_answers_501_naming_the_setting(producer_factory, key_space):
    async with producer_factory() as bare, \
            producer_factory(REDIS_URL=key_space.url, REDIS_KEY_PREFIX=key_space.prefix) as no_token:
        without_redis = await lookup(bare.client, str(uuid.uuid4()))
        without_token = await lookup(no_token.client, str(uuid.uuid4()))
    assert without_redis.status_code == 501 and "REDIS_URL" in without_redis.json()["message"]
    assert without_token.status_code == 501 and "STATUS_API_TOKEN" in without_token.json()["message"]


async def test_status_command_exit_codes(producer_factory, email_service_factory, smtp_server, key_space):
    env = email_status_env(key_space.url, key_space.prefix)
    async with email_service_factory(**env), \
            producer_factory(**producer_status_env(key_space.url, key_space.prefix)) as producer:
        await producer.wait_ready()
        event_id = (await producer.signup("ada@example.com")).json()["event_id"]
        await wait_for_status(producer.client, event_id, "sent")
    unknown = str(uuid.uuid4())
    code, out, _ = await email_cli(env, "status", event_id)
    assert code == 0 and event_id in out and "status=sent" in out and "reply_code=250" in out
    code, out, _ = await email_cli(env, "status", event_id, unknown, "--json")
    found, missing = (json.loads(line) for line in out.splitlines())
    assert code == 1 and found["status"] == "sent" and found["found"] and missing == {"event_id": unknown,
                                                                                      "found": False}
    code, out, _ = await email_cli(env, "status", "--summary", "--window", "1h", "--json")
    assert code == 0 and json.loads(out)["by_status"]["sent"] == 1
    assert (await email_cli(env, "status", "not-an-id"))[0] == 2
    assert (await email_cli(env, "status", "--summary", "--window", "soon"))[0] == 2
    assert (await email_cli(env, "status"))[0] == 2
    code, _, err = await email_cli({"REDIS_URL": ""}, "status", event_id)
    assert code == 2
    code, _, err = await email_cli(email_status_env(f"redis://127.0.0.1:{free_port()}/0", key_space.prefix),
                                   "status", event_id)
    assert code == 3 and "cannot reach Redis" in err
    assert all(part not in out + err for part in ("@example.com", "Ada"))


async def test_replayed_then_sent_purged_and_max_replays(email_service_factory, smtp_server, key_space, vhost,
                                                         producer_factory):
    env = {"AMQP_URL": vhost.url, **email_status_env(key_space.url, key_space.prefix)}
    smtp_server.reject_recipient("gone@example.com", "550 5.1.1 no such user")
    ids = {name: str(uuid.uuid4()) for name in ("retry", "purge", "loop")}
    async with producer_factory(**producer_status_env(key_space.url, key_space.prefix)) as producer:
        async with email_service_factory(MAX_ATTEMPTS="1", **email_status_env(key_space.url, key_space.prefix)):
            smtp_server.defer_next(1)
            await publish_raw(vhost.url, [event_body(event_id=ids["retry"])], message_id=ids["retry"])
            await wait_for_status(producer.client, ids["retry"], "dead_lettered", reason="retries_exhausted")
            await publish_raw(vhost.url, [event_body("gone@example.com", event_id=ids["loop"])], message_id=ids["loop"])
            await wait_for_status(producer.client, ids["loop"], "dead_lettered", reason="smtp_rejected")
            await publish_raw(vhost.url, [b"\xff not json"], message_id=ids["purge"])
            await wait_for_status(producer.client, ids["purge"], "dead_lettered", reason="undecodable")
        # Consumer stopped: the replayed state stays to be seen.
        code, out, _ = await email_cli(env, "dlq", "replay", "--reason", "retries_exhausted", "--reason",
                                       "deadline_exceeded")
        assert code == 0 and f"replayed {ids['retry']}" in out
        await wait_for_status(producer.client, ids["retry"], "replayed", replays=1)
        code, out, _ = await email_cli(env, "dlq", "purge", "--reason", "undecodable", "--yes")
        assert code == 0 and ids["purge"] in out
        await wait_for_status(producer.client, ids["purge"], "purged")
        async with email_service_factory(**email_status_env(key_space.url, key_space.prefix)):
            await wait_for_status(producer.client, ids["retry"], "sent", replays=1)
            # The rejected letter fails again at each replay, until --max-replays holds it.
            for replays in (1, 2):
                code, out, _ = await email_cli(env, "dlq", "replay", "--reason", "smtp_rejected", "--max-replays",
                                               "2")
                assert code == 0 and f"replayed {ids['loop']}" in out
                await wait_for_status(producer.client, ids["loop"], "dead_lettered", replays=replays)
            code, out, _ = await email_cli(env, "dlq", "replay", "--reason", "smtp_rejected", "--max-replays", "2")
            assert code == 0 and f"held {ids['loop']}" in out and "replayed 0 of 1 dead letters; 1 held" in out
        code, out, _ = await email_cli(env, "dlq", "list", "--json")
        assert code == 0 and json.loads(out.splitlines()[0])["event_id"] == ids["loop"]  # held: still there
        code, out, _ = await email_cli(env, "dlq", "purge", "--reason", "smtp_rejected", "--yes")
        assert code == 0
        await wait_for_status(producer.client, ids["loop"], "purged", replays=2)
    assert smtp_server.count() == 1


async def test_redis_stopped_mid_run_every_mail_sent_failures_counted_lookups_503(producer_factory,
                                                                                   email_service_factory, smtp_server,
                                                                                   vhost, tmp_path):
    redis = await PrivateRedis(tmp_path).start()
    prefix = "wm-private:"
    try:
        async with email_service_factory(**email_status_env(redis.url, prefix, DEDUP_FAIL_MODE="open")) as consumer, \
                producer_factory(**producer_status_env(redis.url, prefix)) as producer:
            await producer.wait_ready()
            before = [(await producer.signup(f"u{i}@example.com")).json()["event_id"] for i in range(5)]
            for event_id in before:
                await wait_for_status(producer.client, event_id, "sent")
            redis.stop()
            after = [await producer.signup(f"v{i}@example.com") for i in range(5)]
            assert [r.status_code for r in after] == [202] * 5  # signups never wait for the record
            await eventually(lambda: smtp_server.count() == 10, timeout=30, what="every mail, Redis down")
            down = await lookup(producer.client, before[0])
            failures = consumer.metrics.status_write_failures._value.get()
            producer_metrics = Metrics.parse((await producer.client.get("/metrics")).text)
    finally:
        redis.stop()
    assert down.status_code == 503 and down.headers["Retry-After"] == "1" and no_personal_data(down)
    assert failures >= 5  # each mail's claim at least
    assert (producer_metrics.value("producer_status_write_failures_total") or 0) >= 1
    await declare_topology(vhost.url)  # nothing left unconsumed: the queue exists and is empty
    assert await read_queue(vhost.url, DLQ) == []
