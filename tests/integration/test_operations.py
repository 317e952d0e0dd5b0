"""Dead-letter tooling against real dead letters produced by real failures, and duplicate-free delivery with Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid

import pytest

from email_service.wire import (
    ATTEMPT_NUMBER_HEADER,
    ATTEMPTS_MADE_HEADER,
    LAST_ERROR_HEADER,
    MESSAGE_ID_ABSENT_HEADER,
    REASON_HEADER,
    REPLAY_COUNT_HEADER,
)
from tests.support.amqp import declare_topology, event_body, publish_bare, publish_raw, read_queue, ready_count
from tests.support.env import email_env
from tests.support.ports import free_port
from tests.support.processes import VENV_BIN, email_process, stop_all
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

DLQ = "email.welcome.dlq"


def cli(vhost_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "email-service"), "dlq", *args], env={**os.environ, "AMQP_URL": vhost_url},
                          capture_output=True, text=True, timeout=timeout)


async def make_dead_letters(email_service_factory, smtp_server, vhost, rejected: int = 3, exhausted: int = 2,
                            poison: int = 2) -> dict[str, list[str]]:
    """Real failures: 550 for some recipients, 451 until retries run out for others, and undecodable bodies."""
    ids: dict[str, list[str]] = {"smtp_rejected": [], "retries_exhausted": [], "undecodable": []}
    bodies = []
    for i in range(rejected):
        smtp_server.reject_recipient(f"gone{i}@example.com")
        event_id = str(uuid.uuid4())
        ids["smtp_rejected"].append(event_id)
        bodies.append((event_body(email=f"gone{i}@example.com", event_id=event_id), event_id))
    async with email_service_factory(MAX_ATTEMPTS="2", RETRY_DELAYS="0.2") as consumer:
        for body, event_id in bodies:
            await publish_raw(vhost.url, [body], message_id=event_id)
        for _ in range(poison):
            event_id = str(uuid.uuid4())
            ids["undecodable"].append(event_id)
            await publish_raw(vhost.url, [b"\xff not json"], message_id=event_id)
        await eventually(lambda: consumer.count("dead_lettered") == rejected + poison, what="first dead letters")
        smtp_server.defer_next(2 * exhausted, "451 4.3.0 temporary local problem")
        for i in range(exhausted):
            event_id = str(uuid.uuid4())
            ids["retries_exhausted"].append(event_id)
            await publish_raw(vhost.url, [event_body(email=f"busy{i}@example.com", event_id=event_id)],
                              message_id=event_id)
            await eventually(lambda i=i: consumer.count("dead_lettered") == rejected + poison + i + 1, timeout=15,
                             what="retries exhausted")
    return ids


async def test_list_shows_dead_letters_without_removing_or_reordering(email_service_factory, smtp_server, vhost):
    ids = await make_dead_letters(email_service_factory, smtp_server, vhost)
    first = cli(vhost.url, "list", "--json", "--limit", "100")
    second = cli(vhost.url, "list", "--json", "--limit", "100")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # same messages, same order
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    letters, summary = lines[:-1], lines[-1]
    assert summary == {"total": 7, "by_reason": {"retries_exhausted": 2, "smtp_rejected": 3, "undecodable": 2}}
    assert [entry["event_id"] for entry in letters if entry["reason"] == "smtp_rejected"] == ids["smtp_rejected"]
    exhausted = [entry for entry in letters if entry["reason"] == "retries_exhausted"]
    assert all(e["attempts"] == 2 and "451" in e["last_error"] and e["dead_lettered_at"] for e in exhausted)
    assert await ready_count(vhost.url, DLQ) == 7
    filtered = cli(vhost.url, "list", "--reason", "undecodable", "--limit", "1")
    assert filtered.returncode == 0
    assert filtered.stdout.count("reason=undecodable") == 1 and "smtp_rejected" not in filtered.stdout.splitlines()[0]
    assert "7 dead letters; by reason: retries_exhausted=2, smtp_rejected=3, undecodable=2" in filtered.stdout


async def test_a_dead_letter_that_came_without_message_id_gets_none_and_shows_the_body_event_id(
        email_service_factory, smtp_server, vhost, caplog):
    event_id = str(uuid.uuid4())
    async with email_service_factory() as consumer:
        await publish_bare(vhost.url, json.dumps({"event_id": event_id, "user": {}}).encode())  # invalid_event
        await publish_bare(vhost.url, b"\xff not json")  # no event id anywhere
        await eventually(lambda: consumer.count("dead_lettered") == 2, what="two dead letters")
    logged = [r for r in caplog.records if r.getMessage() == "message dead-lettered"]
    assert [getattr(r, "event_id", None) for r in logged] == [event_id, None]
    listing = cli(vhost.url, "list", "--json")
    assert listing.returncode == 0, listing.stderr
    letters = [json.loads(line) for line in listing.stdout.splitlines()][:-1]
    assert [(e["event_id"], e["message_id"], e["reason"]) for e in letters] == [
        (event_id, None, "invalid_event"), (None, None, "undecodable")]
    text = cli(vhost.url, "list").stdout.splitlines()
    assert text[0].startswith(f"{event_id}  reason=invalid_event") and text[1].startswith("(no id)  reason=undecodable")
    # The copies say that their message_id (given by the AMQP client) is not the original's; replay keeps that.
    assert cli(vhost.url, "replay").returncode == 0
    replayed = await read_queue(vhost.url, "email.welcome")
    assert [m.headers.get(MESSAGE_ID_ABSENT_HEADER) for m in replayed] == [True, True]


async def test_replay_while_a_consumer_runs_delivers_and_a_failure_comes_back(email_service_factory, smtp_server,
                                                                             vhost):
    ids = await make_dead_letters(email_service_factory, smtp_server, vhost)
    smtp_server.recipient_replies.pop("gone0@example.com")  # fixed for one user; the others still bounce
    dry = cli(vhost.url, "replay", "--reason", "smtp_rejected", "--dry-run")
    assert dry.returncode == 0 and "would replay 3 of 7" in dry.stdout
    assert await ready_count(vhost.url, DLQ) == 7
    async with email_service_factory() as consumer:
        result = cli(vhost.url, "replay", "--reason", "smtp_rejected", "--rate", "50")
        assert result.returncode == 0, result.stderr
        assert "replayed 3 of 7" in result.stdout
        await eventually(lambda: consumer.count("sent") == 1 and consumer.count("dead_lettered") == 2,
                         what="one delivered, two dead-lettered again")
        # The replayed mail's age is the operator's, not a signup's latency: counted apart.
        registry = consumer.metrics.registry
        assert registry.get_sample_value("email_end_to_end_seconds_count") == 0
        assert registry.get_sample_value("email_end_to_end_excluded_total", {"reason": "replayed"}) == 1
    assert [m.rcpt_tos for m in smtp_server.received()] == [["gone0@example.com"]]
    dead = await read_queue(vhost.url, DLQ)
    assert len(dead) == 7 - 1
    again = [m for m in dead if m.headers.get(REPLAY_COUNT_HEADER) == 1]
    assert sorted(m.message_id for m in again) == sorted(ids["smtp_rejected"][1:])
    assert all(m.headers[ATTEMPTS_MADE_HEADER] == 1 and m.headers[REASON_HEADER] == "smtp_rejected" for m in again)


async def test_purge_by_reason_then_all(email_service_factory, smtp_server, vhost):
    ids = await make_dead_letters(email_service_factory, smtp_server, vhost)
    refused = cli(vhost.url, "purge", "--reason", "undecodable")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert await ready_count(vhost.url, DLQ) == 7
    some = cli(vhost.url, "purge", "--reason", "undecodable", "--yes")
    assert some.returncode == 0 and "removed 2 of 7" in some.stdout
    assert all(event_id in some.stdout for event_id in ids["undecodable"])
    assert all(line.startswith("removed ") and "reason=undecodable" in line
               for line in some.stdout.splitlines()[:-1]), "purge prints what list prints, not JSON"
    assert await ready_count(vhost.url, DLQ) == 5
    rest = cli(vhost.url, "purge", "--yes", "--json")  # as list --json: one object per letter, then the counts
    assert rest.returncode == 0, rest.stderr
    *removed, summary = [json.loads(line) for line in rest.stdout.splitlines()]
    assert summary == {"removed": 5, "total": 5}
    assert sorted(e["event_id"] for e in removed) == sorted(ids["smtp_rejected"] + ids["retries_exhausted"])
    assert await ready_count(vhost.url, DLQ) == 0


async def test_replay_killed_in_the_middle_loses_nothing(vhost):
    await declare_topology(vhost.url)
    ids = [str(uuid.uuid4()) for _ in range(60)]
    for event_id in ids:
        await publish_raw(vhost.url, [event_body(event_id=event_id)], exchange="", routing_key=DLQ,
                          message_id=event_id, headers={REASON_HEADER: "smtp_rejected"})
    proc = subprocess.Popen([str(VENV_BIN / "email-service"), "dlq", "replay", "--rate", "20"],
                            env={**os.environ, "AMQP_URL": vhost.url}, stdout=subprocess.PIPE, text=True)
    try:
        moved = 0
        while moved < 10:  # bounded by the rate limit: 10 messages take about half a second
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=30)
            assert line, "replay ended before it moved 10 messages"
            moved += line.startswith("replayed ")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    work = await read_queue(vhost.url, "email.welcome")
    dead = await read_queue(vhost.url, DLQ)
    assert 10 <= len(work) < 60
    assert {m.message_id for m in work} | {m.message_id for m in dead} == set(ids)  # nothing lost
    assert len(work) + len(dead) - 60 <= 20  # at worst the unacked batch is duplicated
    assert all(m.headers.get(REPLAY_COUNT_HEADER) == 1 and ATTEMPT_NUMBER_HEADER not in m.headers for m in work)


async def test_clear_errors_for_wrong_url_missing_queue_and_bad_arguments(vhost):
    wrong = cli(f"amqp://guest:guest@127.0.0.1:{free_port()}/", "list")
    assert wrong.returncode == 3 and "cannot use the broker" in wrong.stderr
    no_vhost = cli(vhost.url + "-nonexistent", "list")
    assert no_vhost.returncode == 3, no_vhost.stderr
    assert no_vhost.stderr.count("\n") == 1 and "0x" not in no_vhost.stderr, no_vhost.stderr
    assert f"the broker refused vhost '{vhost.name}-nonexistent' of AMQP_URL: it does not exist" in no_vhost.stderr
    missing = cli(vhost.url, "list")  # fresh vhost: no topology declared
    assert missing.returncode == 4 and "email.welcome.dlq does not exist" in missing.stderr
    bad = cli(vhost.url, "list", "--limit", "-3")
    assert bad.returncode == 2 and "--limit" in bad.stderr


# --- duplicate-free delivery -------------------------------------------------------------------------------------

def process_env(vhost, smtp_server, **extra: str) -> dict[str, str]:
    return email_env(vhost.url, smtp_server.port, RETRY_DELAYS="0.3,0.6", MAX_ATTEMPTS="6", **extra)


async def test_same_event_to_two_consumer_processes_gives_one_mail(vhost, smtp_server, dedup_env, tmp_path):
    await declare_topology(vhost.url, delays=(0.3, 0.6))
    smtp_server.delay = 0.5  # both copies are surely in flight at the same time
    event_id = str(uuid.uuid4())
    body = event_body(event_id=event_id)
    # CONCURRENCY=1 is a prefetch of 1: with both consumers registered, each gets one copy.
    envs = [process_env(vhost, smtp_server, CONCURRENCY="1", **dedup_env) for _ in range(2)]
    procs = [email_process(env, tmp_path / f"email{i}.log").start() for i, env in enumerate(envs)]
    try:
        await asyncio.gather(*(proc.wait_ready(timeout=20) for proc in procs))  # both consumers registered
        await publish_raw(vhost.url, [body, body], message_id=event_id)
        await eventually(lambda: smtp_server.count() == 1, timeout=15, what="the one mail")

        def outcomes(proc) -> list[str]:
            return [o for o in ("sent", "duplicate") for _ in range(proc.output().count(f'"outcome": "{o}"'))]
        await eventually(lambda: sum(len(outcomes(p)) for p in procs) == 2, timeout=15,
                         what="the second copy skipped as a duplicate")
    finally:
        stop_all(procs)
    assert smtp_server.count() == 1
    assert sorted(outcomes(procs[0]) + outcomes(procs[1])) == ["duplicate", "sent"]
    assert all(len(outcomes(p)) == 1 for p in procs), "each consumer process should have handled one copy"


async def test_two_posts_with_the_same_idempotency_key_give_one_mail(producer_factory, email_service_factory,
                                                                     smtp_server, dedup_env):
    async with email_service_factory(**dedup_env) as consumer, producer_factory() as producer:
        await producer.wait_ready()
        headers = {"Idempotency-Key": f"signup-{uuid.uuid4()}"}
        first, second = await asyncio.gather(producer.signup("ada@example.com", headers=headers),
                                             producer.signup("ada@example.com", headers=headers))
        assert first.status_code == second.status_code == 202
        assert first.json() == second.json()
        await eventually(lambda: consumer.count("sent") + consumer.count("duplicate") == 2, timeout=15,
                         what="both copies handled")
    assert smtp_server.count() == 1 and consumer.count("duplicate") == 1


async def test_without_dedup_delivery_is_at_least_once(email_service_factory, smtp_server, vhost):
    body = event_body()
    async with email_service_factory() as consumer:
        await publish_raw(vhost.url, [body, body])
        await eventually(lambda: consumer.count("sent") == 2, what="both copies sent")
    assert smtp_server.count() == 2


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_redis_down_fail_closed_retries_fail_open_sends(email_service_factory, smtp_server, vhost, mode):
    down = {"DEDUP_URL": f"redis://127.0.0.1:{free_port()}/0", "DEDUP_FAIL_MODE": mode}
    async with email_service_factory(**down, MAX_ATTEMPTS="2", RETRY_DELAYS="0.2") as consumer:
        await publish_raw(vhost.url, [event_body()])
        if mode == "closed":
            await eventually(lambda: consumer.count("dead_lettered") == 1, what="retries, then a dead letter")
            assert consumer.count("retried") == 1 and smtp_server.count() == 0
        else:
            await eventually(lambda: smtp_server.count() == 1, what="the mail, sent without the check")
            assert consumer.count("retried") == 0
    if mode == "closed":
        [dead] = await read_queue(vhost.url, DLQ)
        assert "dedup store unavailable" in dead.headers[LAST_ERROR_HEADER]


async def test_replayed_event_that_was_delivered_is_not_sent_again(email_service_factory, smtp_server, vhost,
                                                                   dedup_env):
    event_id = str(uuid.uuid4())
    async with email_service_factory(**dedup_env) as consumer:
        await publish_raw(vhost.url, [event_body(event_id=event_id)])
        await eventually(lambda: smtp_server.count() == 1, what="the mail")
        # The same event comes back, e.g. replayed from the DLQ after its ack was lost.
        await publish_raw(vhost.url, [event_body(event_id=event_id)], exchange="", routing_key="email.welcome")
        await eventually(lambda: consumer.count("duplicate") == 1, what="the duplicate skipped")
    assert smtp_server.count() == 1


async def test_broker_connection_lost_while_the_smtp_server_answers_gives_one_mail(vhost, smtp_server, dedup_env,
                                                                                    tmp_path):
    """The broker connection drops after the SMTP server queued the mail but before its 250 arrived: the send must
    finish (and be recorded), so the redelivered copy is skipped; aborting it would release the claim and mail twice."""
    smtp_server.queue_before_reply = True
    smtp_server.delay = 5.0  # longer than rabbitmqctl takes to close the connection (about 1-2 s)
    await declare_topology(vhost.url, delays=(0.3, 0.6))
    env = process_env(vhost, smtp_server, **dedup_env)
    proc = email_process(env, tmp_path / "email.log").start()
    try:
        await proc.wait_ready(timeout=15)
        event_id = str(uuid.uuid4())
        await publish_raw(vhost.url, [event_body(event_id=event_id)], message_id=event_id)
        await eventually(lambda: smtp_server.count() == 1, timeout=10, what="the mail queued by the SMTP server")
        vhost.close_connections("connection lost while the SMTP server answers")
        assert smtp_server.active == 1, "the connection must close while the SMTP server is still answering"

        async def settled() -> bool:
            return ('"outcome": "duplicate"' in proc.output() or smtp_server.count() > 1) \
                and await ready_count(vhost.url, "email.welcome") == 0
        await eventually(settled, timeout=20, what="the redelivered copy handled")
    finally:
        proc.stop()
    assert smtp_server.count() == 1, f"{smtp_server.count()} mails for one event"
