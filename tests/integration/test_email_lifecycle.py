"""Shutdown with messages in flight, broker connections force-closed mid-stream: nothing lost, nothing left unacked."""

from __future__ import annotations

import signal

import pytest

from tests.support.amqp import declare_topology, event_body, publish_raw, ready_count
from tests.support.env import email_env, email_settings
from tests.support.ports import free_port
from tests.support.processes import VENV_BIN, email_process
from tests.support.services import RunningEmailService
from tests.support.waits import eventually

pytestmark = pytest.mark.integration


def process_env(vhost, smtp_server, **extra: str) -> dict[str, str]:
    return email_env(vhost.url, smtp_server.port, RETRY_DELAYS="0.2,0.4", LOG_LEVEL="info", **extra)


async def test_sigterm_with_messages_in_flight_loses_nothing(vhost, smtp_server, email_service_factory, tmp_path):
    smtp_server.delay = 0.4  # slow SMTP, so messages are surely in flight when the signal arrives
    total = 40
    await declare_topology(vhost.url)
    await publish_raw(vhost.url, [event_body(email=f"u{i}@example.com") for i in range(total)])
    proc = email_process(process_env(vhost, smtp_server, CONCURRENCY="8", SHUTDOWN_TIMEOUT_SECONDS="10"),
                         tmp_path / "email.log").start()
    try:
        await eventually(lambda: smtp_server.count() >= 3 and smtp_server.active >= 1, timeout=20,
                         what="the first mails, and more in flight")
        proc.signal(signal.SIGTERM)
        code = await proc.wait_exit(timeout=30)
    finally:
        proc.stop()
    output = proc.output()
    assert code == 0, output
    assert "in-flight messages handled" in output and '"left_unacked": 0' in output, output
    sent_by_first = smtp_server.count()
    assert 0 < sent_by_first < total
    # Nothing was left unacked: what the first process did not finish is back in the queue, ready.
    assert await ready_count(vhost.url, "email.welcome") == total - sent_by_first
    smtp_server.delay = 0
    async with email_service_factory():
        await eventually(lambda: smtp_server.count() >= total, timeout=20, what="the rest, by a new consumer")
    ids = smtp_server.message_ids()
    assert len(ids) == total and len(set(ids)) == total  # every mail exactly once


async def test_shutdown_timeout_leaves_unfinished_messages_to_the_broker(vhost, smtp_server, email_service_factory,
                                                                         tmp_path):
    smtp_server.delay = 5  # longer than the shutdown timeout
    await declare_topology(vhost.url)
    await publish_raw(vhost.url, [event_body(email=f"u{i}@example.com") for i in range(4)])
    proc = email_process(process_env(vhost, smtp_server, CONCURRENCY="4", SHUTDOWN_TIMEOUT_SECONDS="0.5"),
                         tmp_path / "email.log").start()
    try:
        await eventually(lambda: smtp_server.active >= 1, timeout=20, what="a mail in flight")
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout=30) == 0
    finally:
        proc.stop()
    assert smtp_server.count() == 0
    assert await ready_count(vhost.url, "email.welcome") == 4  # returned unacked, none lost
    smtp_server.delay = 0
    async with email_service_factory():
        await eventually(lambda: smtp_server.count() == 4, timeout=20, what="redelivery")


async def test_broker_connections_force_closed_mid_stream(vhost, smtp_server, email_service_factory):
    total = 300
    async with email_service_factory(CONCURRENCY="16") as consumer:
        await publish_raw(vhost.url, [event_body(email=f"u{i}@example.com") for i in range(total)])
        await eventually(lambda: smtp_server.count() >= 20, timeout=20, what="the first mails")
        connects = consumer.service.consumer.connects
        vhost.close_connections("test: force-closed mid-stream")
        await eventually(lambda: consumer.service.consumer.connects > connects, timeout=15,
                         what="the consumer to reconnect and register again")
        await eventually(lambda: len(set(smtp_server.message_ids())) == total, timeout=30,
                         what="every message delivered after the reconnect")
        await eventually(lambda: consumer.service.consumer.ready, timeout=10, what="readiness back")

        async def drained() -> bool:  # redeliveries of messages whose ack was lost are handled too
            return (await ready_count(vhost.url, "email.welcome") == 0
                    and consumer.service.handler.in_progress == 0)
        await eventually(drained, timeout=15, what="the work queue to drain")
    assert await ready_count(vhost.url, "email.welcome.dlq") == 0
    # Messages whose ack was lost with the connection are delivered again: at-least-once, counted, bounded.
    duplicates = smtp_server.count() - total
    assert 0 <= duplicates <= 16


async def test_starts_while_broker_is_unreachable_then_not_ready(smtp_server, tmp_path):
    settings = email_settings(f"amqp://guest:guest@127.0.0.1:{free_port()}/", smtp_server.port)
    service = RunningEmailService(settings).service
    await service.start()
    try:
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.metrics_port}") as client:
            await eventually(lambda: service.health.port is not None, what="health server")
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "email_consumer_up 0.0" in (await client.get("/metrics")).text
    finally:
        await service.stop()


async def test_bad_configuration_exits_2_naming_the_variable(tmp_path):
    import subprocess

    result = subprocess.run([str(VENV_BIN / "email-service"), "run"], env={"SMTP_SECURITY": "ssl", "PATH": "/usr/bin"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "SMTP_SECURITY" in result.stderr
