"""Shared fixtures: a RabbitMQ vhost per test, a real SMTP server (aiosmtpd) per test, and the services themselves.

Nothing is mocked here. If RabbitMQ is not there, tests fail with a message saying what to start.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlsplit

import pytest

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
_BROKER = urlsplit(AMQP_URL)


def free_port() -> int:
    """A TCP port that was free a moment ago (servers here cannot bind port 0 and report it back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not on PATH: install RabbitMQ (apt-get install rabbitmq-server) and start it "
                    "with `rabbitmq-server -detached`, or run `make broker`")
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, interval: float = 0.02,
                     what: str = "condition") -> None:
    """Wait (bounded) until check() is true; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def broker_running() -> None:
    try:
        with socket.create_connection((_BROKER.hostname or "localhost", _BROKER.port or 5672), timeout=3):
            pass
    except OSError:
        pytest.fail(f"RabbitMQ does not answer at {_BROKER.hostname}:{_BROKER.port or 5672}. "
                    "Start it: `rabbitmq-server -detached` (or `make broker`)")


class VHost:
    def __init__(self, name: str) -> None:
        self.name = name
        base = f"{_BROKER.scheme}://{_BROKER.netloc}"
        self.url = f"{base}/{quote(name, safe='')}"

    def close_connections(self, reason: str = "test closes connections") -> None:
        rabbitmqctl("close_all_connections", "--vhost", self.name, reason)


def _create_vhost() -> VHost:
    name = f"wm-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, _BROKER.username or "guest", ".*", ".*", ".*")
    return VHost(name)


@pytest.fixture
def vhost(broker_running) -> VHost:
    """A fresh vhost for this test, deleted afterwards (with every queue and connection in it)."""
    created = _create_vhost()
    yield created
    rabbitmqctl("delete_vhost", created.name)


@pytest.fixture(scope="module")
def module_vhost(broker_running) -> VHost:
    """One vhost for a module's tests that leave nothing behind (exclusive queues only); saves a vhost per test."""
    created = _create_vhost()
    yield created
    rabbitmqctl("delete_vhost", created.name)


@pytest.fixture
def smtp_server():
    from tests.support.smtp_server import SmtpTestServer

    server = SmtpTestServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def producer_factory(request):
    """Start producer-service in-process: `async with producer_factory() as p:`. Against this test's own vhost,
    unless given another URL (no vhost is made then)."""
    from tests.support.services import RunningProducer

    def make(amqp_url: str | None = None, **env: str) -> RunningProducer:
        return RunningProducer(amqp_url or request.getfixturevalue("vhost").url, free_port(), **env)

    return make


@pytest.fixture
def email_service_factory(vhost, smtp_server):
    """Start email-service in-process against this test's vhost and SMTP server."""
    from tests.support.services import RunningEmailService, email_settings

    def make(smtp_port: int | None = None, dedup=None, **env: str) -> RunningEmailService:
        settings = email_settings(vhost.url, smtp_port or smtp_server.port, free_port(), **env)
        return RunningEmailService(settings, dedup=dedup)

    return make


DEDUP_TEST_REDIS_URL = os.environ.get("DEDUP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def dedup_env():
    """Settings for duplicate-free delivery in a key space of this test's own; the keys are deleted afterwards."""
    import redis

    prefix = f"wm-test-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(DEDUP_TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis does not answer at {DEDUP_TEST_REDIS_URL}: start it (redis-server --daemonize yes) "
                    "or set DEDUP_TEST_REDIS_URL")
    yield {"DEDUP_URL": DEDUP_TEST_REDIS_URL, "DEDUP_KEY_PREFIX": prefix}
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    assert not list(client.scan_iter(f"{prefix}*")), "dedup keys left behind"
    client.close()
