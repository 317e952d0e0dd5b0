"""Fixtures shared by every suite: a RabbitMQ vhost per test (or module), a real SMTP server per test, the two
services in-process, and a Redis key space for dedup; and how the tests are split between xdist workers (a scheduler
and a collection check). Helpers live in tests/support/; this file holds fixtures and those hooks only.

Nothing is mocked here. If RabbitMQ or Redis is not there, tests fail with a message saying what to start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from xdist.scheduler import LoadScopeScheduling

from tests.support.broker import VHost, check_broker
from tests.support.env import email_settings
from tests.support.ports import free_port
from tests.support.postfix import PostfixRelay
from tests.support.redis_server import KeySpace
from tests.support.services import RunningEmailService, RunningProducer
from tests.support.smtp_server import SmtpTestServer

# `make test` runs the suite in two xdist workers. Everything is isolated per test (vhosts, free ports, key
# prefixes, private servers) except the RabbitMQ nodes the suites start, stop and kill themselves: those tests run
# in one worker, in turn (one scheduling unit, "erlang"). Side by side they disturbed each other: a private node
# that did not boot within 179 s, a cluster node killed by one test while another restarted it.
# xdist's own `--dist loadgroup` cannot be used for this with pytest 9: it marks a group by rewriting the item's
# `_nodeid`, which pytest 9 no longer reads (node ids live in `_id`), so every group silently fell apart. The
# scheduler below groups by node id itself; the controller knows only node ids, hence the list, and a test that
# uses an Erlang fixture without being on it stops the collection.
ERLANG_TESTS = ("tests/cluster/",  # rc1..rc3@localhost on 5681-5683, the front on 5680
                "tests/reliability/test_partition.py",  # partitioned_cluster: netns nodes wm<tag>-1..3
                "tests/reliability/test_scenarios.py::test_broker_restart")  # private_broker: wm-reliability-<tag>
ERLANG_FIXTURES = ("rabbit_cluster", "partitioned_cluster", "private_broker")


class ErlangScheduling(LoadScopeScheduling):
    """Each test its own unit (as `--dist load`), except the ERLANG_TESTS: one unit, run by one worker in order."""

    def _split_scope(self, nodeid: str) -> str:
        return "erlang" if nodeid.startswith(ERLANG_TESTS) else nodeid


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> ErlangScheduling:
    return ErlangScheduling(config, log)


def pytest_itemcollected(item: pytest.Item) -> None:
    fixtures = getattr(item, "fixturenames", ())
    if any(fixture in fixtures for fixture in ERLANG_FIXTURES) and not item.nodeid.startswith(ERLANG_TESTS):
        raise pytest.UsageError(f"{item.nodeid} uses a RabbitMQ node of the suite's own ({', '.join(fixtures)}): "
                                "add it to ERLANG_TESTS in tests/conftest.py, so it never runs beside the others")


@pytest.fixture(scope="session")
def broker_running() -> None:
    check_broker()


@pytest.fixture
def vhost(broker_running: None) -> Iterator[VHost]:
    """A fresh vhost for this test, deleted afterwards (with every queue and connection in it)."""
    created = VHost.create()
    yield created
    created.delete()


@pytest.fixture(scope="module")
def module_vhost(broker_running: None) -> Iterator[VHost]:
    """One vhost for a module's tests that leave nothing behind (exclusive queues only); saves a vhost per test."""
    created = VHost.create()
    yield created
    created.delete()


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    server = SmtpTestServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def producer_factory(request: pytest.FixtureRequest) -> Callable[..., RunningProducer]:
    """Start producer-service in-process: `async with producer_factory() as p:`. Against this test's own vhost,
    unless given another URL (no vhost is made then)."""

    def make(amqp_url: str | None = None, **env: str) -> RunningProducer:
        return RunningProducer(amqp_url or request.getfixturevalue("vhost").url, free_port(), **env)

    return make


@pytest.fixture
def email_service_factory(vhost: VHost, smtp_server: SmtpTestServer) -> Callable[..., RunningEmailService]:
    """Start email-service in-process against this test's vhost and SMTP server."""

    def make(smtp_port: int | None = None, **env: str) -> RunningEmailService:
        return RunningEmailService(email_settings(vhost.url, smtp_port or smtp_server.port, **env))

    return make


@pytest.fixture
def dedup_env() -> Iterator[dict[str, str]]:
    """Settings for duplicate-free delivery in a key space of this test's own; the keys are deleted afterwards."""
    space = KeySpace()
    yield space.env()
    space.clean()


@pytest.fixture
def key_space() -> Iterator[KeySpace]:
    """A key space of this test's own on the shared Redis (delivery records, dedup); its keys are deleted after."""
    space = KeySpace()
    yield space
    space.clean()


@pytest.fixture(scope="module")
def relay_sink() -> Iterator[SmtpTestServer]:
    """The SMTP server behind the module's Postfix relay: what Postfix passed on arrives here."""
    server = SmtpTestServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postfix_relay(request: pytest.FixtureRequest, relay_sink: SmtpTestServer) -> Iterator[PostfixRelay]:
    """Debian's Postfix relaying to `relay_sink`, one per test module (anvil's counts carry across its tests), with
    the limits of the module's POSTFIX_LIMITS (PostfixRelay keywords, `extra` for any other main.cf settings such
    as smtpd_helo_restrictions; default: Postfix's own)."""
    relay = PostfixRelay(relay_sink.port, **getattr(request.module, "POSTFIX_LIMITS", {}))
    relay.start()
    yield relay
    relay.stop()
