"""Fuzzing the two edges of the pipeline against real processes.

- The producer's HTTP API: schemathesis (every check, a fixed seed, a bounded number of cases per operation) from the
  OpenAPI description it serves, with the broker up and with the broker unreachable, and over the delivery-status
  lookup with Redis and its token (the auth checks send it without and with a wrong token); and hypothesis-generated raw
  requests schemathesis does not make (broken UTF-8, bodies around MAX_BODY_BYTES, deep nesting, odd content types
  and headers). No 5xx but a 503 while the broker is out, no status code the OpenAPI description does not list,
  every rejection a machine-readable JSON body.
- The consumer: hypothesis-generated AMQP messages (random bytes, wrong content types, very large bodies, missing and
  odd headers and properties, broken UTF-8, JSON of the wrong shape) with valid events mixed in. Every invalid one
  is dead-lettered with the reason the contract implies; the process stays up and keeps sending the valid ones.

A failure here is a bug report: each failing case is printed with what reproduces it.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import uuid
from collections import defaultdict

import aio_pika
import httpx
import pytest

from producer_service.app import REQUEST_ID_HEADER
from tests.support.amqp import declare_topology, read_dead_letters, ready_count
from tests.support.delivery_status import AUTH, producer_status_env
from tests.support.env import email_env, producer_env
from tests.support.ports import free_port
from tests.support.probes import http_ok
from tests.support.processes import VENV_BIN, email_process, producer_process
from tests.support.prometheus import Metrics
from tests.support.report import FULL
from tests.support.service_logs import WITH_CONSUMER_CALLBACKS, tracebacks
from tests.support.smtp_server import SmtpTestServer
from tests.support.waits import within

from .fuzz_cases import RawRequest, amqp_messages, collect, raw_requests, wire_types
from .harness import SEED
from .invariant import record_fuzz

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow,
              pytest.mark.timeout(900 if FULL else 240)]

MAX_BODY_BYTES = 16384
DLQ = "email.welcome.dlq"
SIGNUP_STATUSES = {202, 400, 413, 415, 422, 503}  # what openapi.json lists for POST /v1/signups
STATUS_OPERATION = "getDeliveryStatus"  # GET /v1/signups/{event_id}


@pytest.fixture
def producer(request, tmp_path):
    """A producer process; the parameter says whether its broker is reachable ("up") or not ("down")."""
    broker = getattr(request, "param", "up")
    if broker == "up":
        vhost = request.getfixturevalue("vhost")
        asyncio.run(declare_topology(vhost.url))  # so accepted signups are routable (no consumer needed)
        amqp_url = vhost.url
    else:
        amqp_url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nothing listens there: the broker is out
    port = free_port()
    process = producer_process(producer_env(amqp_url, http_port=port, MAX_BODY_BYTES=MAX_BODY_BYTES,
                                            LOG_LEVEL="WARNING", PUBLISH_TIMEOUT_SECONDS=2),
                               tmp_path / "producer.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(process.wait_ready(f"{url}/{'readyz' if broker == 'up' else 'healthz'}", timeout=30))
        yield url, broker, process
    finally:
        process.stop()


def _signups_by_outcome(url: str) -> dict[str, float]:
    return Metrics.parse(httpx.get(f"{url}/metrics", timeout=5).text).by_label("producer_signups_total", "outcome")


@pytest.mark.parametrize("producer", ["up", "down"], indirect=True)
def test_producer_api_schemathesis(producer, tmp_path):
    url, broker, process = producer
    # With the broker out, a valid signup must get the documented 503 (and nothing else in the 5xx range). The
    # status lookup (501 here: no REDIS_URL) has a run of its own below.
    output = _schemathesis(url, tmp_path, f"broker {broker}", ["--exclude-operation-id", STATUS_OPERATION],
                           extra_statuses=() if broker == "up" else ("503",))
    if broker == "down":  # the outage pass really saw the broker out
        assert _signups_by_outcome(url).get("unavailable", 0) > 0, output


def test_status_lookup_schemathesis(tmp_path, key_space):
    port = free_port()
    env = producer_env(f"amqp://guest:guest@127.0.0.1:{free_port()}/", http_port=port, LOG_LEVEL="WARNING",
                       **producer_status_env(key_space.url, key_space.prefix))
    process = producer_process(env, tmp_path / "producer.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(process.wait_ready(f"{url}/healthz", timeout=30))
        _schemathesis(url, tmp_path, "status lookup", ["--include-operation-id", STATUS_OPERATION, "--header",
                                                       f"Authorization: {AUTH['Authorization']}"])
    finally:
        process.stop()


def _schemathesis(url: str, tmp_path, name: str, select: list[str], extra_statuses: tuple[str, ...] = ()) -> str:
    config = tmp_path / "schemathesis.toml"
    statuses = json.dumps(["2xx", "3xx", "4xx", *extra_statuses])
    config.write_text(f"[checks.not_a_server_error]\nexpected-statuses = {statuses}\n")
    max_examples = 300 if FULL else 50
    argv = [str(VENV_BIN / "st"), "--config-file", str(config), "run", f"{url}/openapi.json", "--checks", "all",
            "--seed", str(SEED), "--max-examples", str(max_examples), "--phases", "examples,coverage,fuzzing",
            "--workers", "1", "--generation-database", "none", "--output-sanitize", "false", "--no-color",
            "--continue-on-failure", "--request-timeout", "10", *select]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert "Loaded specification" in output, output
    generated = re.search(r"(\d+) generated", output)
    failures = re.search(r"(\d+) unique failures?", output)
    record_fuzz(f"schemathesis, all checks, {name}", int(generated.group(1)) if generated else 0,
                int(failures.group(1)) if failures else (1 if result.returncode else 0))
    if result.returncode != 0:
        pytest.fail(f"schemathesis found problems in the producer API ({name}; seed {SEED}, {max_examples} "
                    "cases per operation). Each failure below names the check and the request that reproduces it "
                    "(curl). These are producer or OpenAPI bugs: fix the service or openapi.json, do not weaken the "
                    "checks.\n\n" + output, pytrace=False)
    return output


def _problem_body_errors(response: httpx.Response) -> list[str]:
    errors = []
    if not response.headers.get("content-type", "").startswith("application/json"):
        errors.append(f"content type {response.headers.get('content-type')!r}")
    try:
        body = response.json()
    except ValueError:
        return [*errors, f"body is not JSON: {response.content[:100]!r}"]
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not isinstance(body.get("message"), str):
        return [*errors, f"body lacks error/message strings: {body!r:.200}"]
    detail = body.get("detail")
    if detail is not None and not (isinstance(detail, list) and all(
            isinstance(d, dict) and all(isinstance(d.get(k), str) for k in ("field", "code", "message"))
            for d in detail)):
        errors.append(f"detail is not a list of {{field, code, message}}: {detail!r:.200}")
    return errors


@pytest.mark.parametrize("producer", ["up", "down"], indirect=True)
async def test_producer_raw_requests(producer):
    url, broker, process = producer
    cases: list[RawRequest] = collect(raw_requests(MAX_BODY_BYTES), 600 if FULL else 200, SEED)
    failures: dict[tuple[str, ...], list[RawRequest]] = defaultdict(list)  # the problems of a request -> requests
    # A new connection per request, so a connection the server closes is blamed on the request that closed it.
    async with httpx.AsyncClient(base_url=url, timeout=15, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for case in cases:
            headers = dict(case.headers)
            if case.content_type is not None:
                headers["Content-Type"] = case.content_type
            try:
                response = await client.post("/v1/signups", content=case.body, headers=headers)
            except httpx.TransportError as exc:
                failures[(f"no response ({exc.__class__.__name__})",)].append(case)
                continue
            problems = _response_problems(response, broker)
            if problems:
                failures[tuple(problems)].append(case)
    assert process.alive, "the producer died"
    record_fuzz(f"raw requests (hypothesis), broker {broker}", len(cases), sum(len(v) for v in failures.values()))
    if failures:
        report = [f"{len(cases)} raw requests (seed {SEED}, broker {broker}); problems found:"]
        for problems, bad in failures.items():
            bad.sort(key=lambda c: len(c.body))
            report.append(f"\n* {'; '.join(problems)}: {len(bad)} requests, the smallest and the largest:")
            report += [f"    {case.describe()}" for case in (bad if len(bad) <= 5 else bad[:3] + bad[-2:])]
        pytest.fail("\n".join(report), pytrace=False)


def _response_problems(response: httpx.Response, broker: str) -> list[str]:
    problems = []
    status = response.status_code
    if status not in SIGNUP_STATUSES:
        problems.append(f"status {status} is not in the OpenAPI description")
    if status >= 500 and not (status == 503 and broker == "down"):
        problems.append(f"server error {status} with the broker {broker}")
    if status == 503 and "Retry-After" not in response.headers:
        problems.append("503 without Retry-After")
    if status == 202:
        if broker == "down":
            problems.append("202 although the broker is unreachable")
        try:
            uuid.UUID(response.json()["event_id"])
        except (ValueError, KeyError, TypeError):
            problems.append(f"202 without an event id: {response.text[:80]}")
    elif status < 300:
        problems.append(f"unexpected success {status}")
    else:
        problems += [f"rejection not machine-readable: {error}" for error in _problem_body_errors(response)]
    if REQUEST_ID_HEADER not in response.headers:
        problems.append("no X-Request-ID in the response")
    return problems


async def test_consumer_survives_fuzzed_amqp_messages(vhost, tmp_path):
    messages = collect(amqp_messages(), 500 if FULL else 150, SEED)
    # About a quarter are valid events (with odd properties and headers): the consumer must keep delivering them.
    for i, message in enumerate(messages):
        message.number = i
    smtp = SmtpTestServer(free_port())
    smtp.start()
    metrics_port = free_port()
    process = email_process(email_env(vhost.url, smtp.port, metrics_port=metrics_port, RETRY_DELAYS="0.2,0.4",
                                      MAX_ATTEMPTS=3, CONCURRENCY=16, LOG_LEVEL="info"),
                            tmp_path / "email.log").start()
    metrics = f"http://127.0.0.1:{metrics_port}"
    try:
        await process.wait_ready(timeout=30)
        await _publish(vhost.url, messages)
        valid = {m.valid_event_id: m for m in messages if m.valid_event_id}
        invalid = [m for m in messages if m.expected is not None]
        dlq_target = len(invalid)

        async def settled() -> bool:
            mails = smtp.by_event()
            return all(mails[e] for e in valid) and await ready_count(vhost.url, DLQ) >= dlq_target

        started = time.monotonic()
        with_timeout = await within(settled, timeout=60 if FULL else 30)
        waited = time.monotonic() - started
        alive = process.alive
        healthy = alive and await http_ok(f"{metrics}/healthz") and await http_ok(f"{metrics}/readyz")
        takes_new_work = healthy and await _send_one_more_valid(vhost.url, smtp)
    finally:
        code = process.stop()
        smtp.stop()
    letters = [(letter.headers, letter.reason) for letter in await read_dead_letters(vhost.url, DLQ)]
    left = await ready_count(vhost.url, "email.welcome")

    problems = []
    if not alive:
        problems.append(f"the email-service process died (exit {process.returncode})")
    elif not healthy:
        problems.append("the email-service is alive but no longer healthy and ready")
    elif not takes_new_work:
        problems.append("after the fuzz, a new valid event was not sent within 15s: the consumer takes no more work "
                        "(messages it could neither ack nor move hold every prefetch slot)")
    if code not in (0, None):
        problems.append(f"the graceful stop exited {code}")
    if not with_timeout:
        problems.append(f"not every message was delivered or dead-lettered within {waited:.0f}s")
    problems += [f"{count}x traceback in the log, {kind}"
                 for kind, count in tracebacks([process.log_path], WITH_CONSUMER_CALLBACKS).most_common()]
    seen: dict[int, list[str]] = defaultdict(list)
    for headers, reason in letters:
        number = headers.get("x-fuzz-number")
        if number is None:
            problems.append(f"a dead letter without our x-fuzz-number header: {headers!r:.200}")
            continue
        seen[int(number)].append(reason)
    mails = smtp.by_event()
    wrong, missing, valid_wrong = [], [], []
    for message in messages:
        reasons = seen.get(message.number, [])
        expected = message.expected
        if expected is None:
            count = mails[message.valid_event_id] if message.valid_event_id else 0
            if count != 1 or reasons:
                valid_wrong.append(f"sent {count} times, dead-lettered as {reasons}: {message.describe()}")
        elif not reasons:
            missing.append(f"expected {'/'.join(sorted(expected))}: {message.describe()}")
        elif len(reasons) != 1 or reasons[0] not in expected:
            wrong.append(f"expected {'/'.join(sorted(expected))}, got {reasons}: {message.describe()}")
    for what, items in (("dead-lettered with the wrong reason", wrong),
                        ("neither delivered nor dead-lettered", missing),
                        ("valid events not sent exactly once", valid_wrong)):
        if items:
            problems.append(f"{len(items)} messages {what}, e.g.:\n    " + "\n    ".join(items[:4]))
    if left:
        problems.append(f"{left} messages still in email.welcome after the consumer stopped (never acked or "
                        "dead-lettered)")
    record_fuzz("AMQP messages into the consumer (hypothesis)", len(messages), len(problems))
    if problems:
        pytest.fail(f"{len(messages)} fuzzed messages (seed {SEED}, {len(valid)} valid events among them):\n- "
                    + "\n- ".join(problems) + f"\n\nlog: {tmp_path}/email.log", pytrace=False)


async def _publish(url: str, messages) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for message in messages:
            with wire_types():
                await channel.default_exchange.publish(
                    aio_pika.Message(body=message.body, headers={**message.headers, "x-fuzz-number": message.number},
                                     **message.properties),
                    "email.welcome", mandatory=True)
    finally:
        await connection.close()


async def _send_one_more_valid(url: str, smtp: SmtpTestServer) -> bool:
    """After the fuzz: does the consumer still take new work?"""
    from .fuzz_cases import valid_event

    event_id = str(uuid.uuid4())
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(valid_event(event_id, "after@example.com")).encode()), "email.welcome")
    finally:
        await connection.close()
    return await within(lambda: smtp.by_event()[event_id] == 1, timeout=15)
