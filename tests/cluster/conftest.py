"""A local three-node RabbitMQ cluster behind an haproxy TCP front, for failover tests.

The failover scenario's fixtures (its vhost, SMTP server, started pipeline, kills and load) follow the cluster's;
the scenario's pieces live in the modules beside this file.

The cluster is deploy/cluster/local_cluster (nodes rc1..rc3@localhost on 5681-5683, the front on 127.0.0.1:5680;
the CLUSTER_* variables of local_cluster.settings move it), imported directly: pytest.ini puts deploy/cluster on
the path. The `rabbit_cluster` fixture brings it up once per session and takes it down at the end; a cluster that
was already up (`make cluster-up`) is used as it is and left running. Nothing is skipped: without RabbitMQ, haproxy
or root the fixture fails and says what is missing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from local_cluster import Cluster, ClusterError
from local_cluster.rabbitmq import RabbitMQ

from tests.support.fleet import ConsumerFleet
from tests.support.ports import free_port
from tests.support.smtp_server import SmtpTestServer

from .kill_cycle import PLAN, LeaderKills
from .pipeline import CONSUMERS, SMTP_DELAY, ClusterVhost, Pipeline, consumer_env
from .rabbit_cluster import RabbitCluster
from .steady_load import SteadyLoad

UP_TIMEOUT_SECONDS = 240       # from nothing it takes ~15-25 s on 2 cores, more when the machine is busy
DOWN_TIMEOUT_SECONDS = 120


def _require_prerequisites() -> None:
    try:
        RabbitMQ.locate()
    except ClusterError as error:
        pytest.fail(f"the cluster tests run three extra RabbitMQ nodes (apt-get install -y rabbitmq-server "
                    f"haproxy; run as root): {error}")


def _healthy(cluster: Cluster) -> bool:
    return cluster.settings.state_dir.is_dir() and cluster.health().healthy


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    _require_prerequisites()
    cluster = Cluster.from_env()
    already_up = _healthy(cluster)
    started = time.monotonic()
    try:
        url = cluster.up(timeout=UP_TIMEOUT_SECONDS)
        nodes = cluster.running_nodes()
        if len(nodes) != len(cluster.nodes):
            pytest.fail(f"expected {len(cluster.nodes)} running nodes, the cluster reports {nodes}")
    except BaseException:
        if not already_up:  # a half-started cluster must not outlive the session either (the first error counts)
            with contextlib.suppress(ClusterError):
                cluster.down(timeout=DOWN_TIMEOUT_SECONDS)
        raise
    handle = RabbitCluster(cluster, url=url, nodes=nodes, timings={"up_seconds": time.monotonic() - started})
    try:
        yield handle
    finally:
        if already_up:
            # someone ran `make cluster-up`: leave it as found (all nodes running again)
            cluster.up(timeout=UP_TIMEOUT_SECONDS)
        else:
            started = time.monotonic()
            cluster.down(timeout=DOWN_TIMEOUT_SECONDS)
            handle.timings["down_seconds"] = time.monotonic() - started


# --- the failover scenario (tests/cluster/test_signup_failover.py): its vhost, SMTP server, services and load ----

@pytest.fixture
def cluster_vhost(rabbit_cluster: RabbitCluster) -> Iterator[ClusterVhost]:
    """A vhost of the test's own on the healthy cluster, deleted afterwards."""
    vhost = ClusterVhost(rabbit_cluster)
    running = rabbit_cluster.running_nodes()
    assert sorted(running) == sorted(rabbit_cluster.nodes), f"the cluster must start healthy, running: {running}"
    vhost.create()
    yield vhost
    vhost.delete()


@pytest.fixture
def failover_smtp() -> Iterator[SmtpTestServer]:
    """An SMTP server that queues a mail once its data is in and answers 250 SMTP_DELAY later: mails are in
    flight when their consumer's connection dies."""
    server = SmtpTestServer(free_port())
    server.delay = SMTP_DELAY
    server.queue_before_reply = True
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def failover_pipeline(cluster_vhost: ClusterVhost, failover_smtp: SmtpTestServer,
                            dedup_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Pipeline]:
    """Three consumers (the first one alone) and a producer on the node leading every queue, their /readyz polled."""
    fleet = ConsumerFleet(consumer_env(cluster_vhost, failover_smtp, dedup_env), CONSUMERS, tmp_path)
    pipeline = Pipeline(cluster_vhost, failover_smtp, fleet, tmp_path)
    try:
        await pipeline.start()
        yield pipeline
    finally:
        await pipeline.stop()


@pytest.fixture
async def leader_kills(rabbit_cluster: RabbitCluster, failover_pipeline: Pipeline) -> AsyncIterator[LeaderKills]:
    kills = LeaderKills(rabbit_cluster, failover_pipeline, PLAN)
    yield kills
    await kills.restore()


@pytest.fixture
async def steady_load(failover_pipeline: Pipeline, failover_smtp: SmtpTestServer) -> AsyncIterator[SteadyLoad]:
    load = SteadyLoad(failover_pipeline.producer_url, PLAN, failover_smtp)
    yield load
    await load.abandon()
