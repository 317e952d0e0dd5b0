"""The welcome-mail pipeline on the clustered RabbitMQ: a vhost of its own, three consumers and a producer placed
on the node that leads every queue, what rabbitmqctl says about queues and connections, and the drain at the end.

Invariants:
- every process talks to the cluster through the haproxy front only, in the scenario's own vhost;
- consumer 1 is started (and ready) alone before the others: it declares every queue, so with RabbitMQ's
  client-local leader placement its node leads them all;
- the producer's connection sits on that node too (haproxy's round robin puts the 4th connection there; a
  producer that landed elsewhere is stopped and started anew, at most `PLACEMENT_ATTEMPTS` times), so the first
  kill takes the leaders of all queues, a consumer's and the producer's connections at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from email_service.retry import RetryPolicy
from email_service.topology import DEAD_LETTER_QUEUE, WORK_QUEUE
from tests.support.amqp import ready_count
from tests.support.env import email_env, producer_env
from tests.support.fleet import ConsumerFleet
from tests.support.load import Signup
from tests.support.probes import ProbeSet, ReadinessProbe
from tests.support.processes import ServiceProcess, producer_process, stop_all_async
from tests.support.prometheus import scrape
from tests.support.smtp_server import SmtpTestServer
from tests.support.waits import eventually

if TYPE_CHECKING:
    from tests.cluster.rabbit_cluster import RabbitCluster

CONSUMERS = 3
RETRY_DELAYS = (0.5, 1.0, 2.0)
TIER_QUEUES = tuple(name for name, _ in RetryPolicy(max_attempts=10, delays=RETRY_DELAYS).tier_queues)
QUEUES = (WORK_QUEUE, *TIER_QUEUES, DEAD_LETTER_QUEUE)
SMTP_DELAY = 0.3                # the SMTP server's 250 comes this long after it has queued the mail: mails are in
                                # flight when a node dies, their acks are lost with the connection and RabbitMQ
                                # redelivers them (dedup's job)
STARTUP_TIMEOUT = 30            # one service process ready (generous: this 2-core machine is shared)
DRAIN_TIMEOUT = 90              # after the load: every accepted signup mailed or dead-lettered
PLACEMENT_ATTEMPTS = 3
PROBE_INTERVAL = 0.1            # /readyz polling

Placement = dict[str, list[str]]  # node -> connection names ("producer-service" / "email-service") in the vhost


class ClusterVhost:
    """A vhost of the scenario's own on the cluster; `began` is when the scenario started preparing it."""

    def __init__(self, cluster: RabbitCluster) -> None:
        self.cluster = cluster
        self.name = f"wm-failover-{uuid.uuid4().hex[:8]}"
        self.url = f"{cluster.url.rstrip('/')}/{self.name}"
        self.began = time.monotonic()

    def create(self) -> None:
        node = self.cluster.nodes[0]
        self.cluster.ctl(node, "add_vhost", self.name)
        self.cluster.ctl(node, "set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def delete(self) -> None:
        """Never fails the teardown: a vhost left behind is reported, and goes with `cluster.sh down` anyway."""
        try:
            self.cluster.ctl(self.cluster.running_nodes()[0], "delete_vhost", self.name)
        except BaseException as error:  # noqa: BLE001 - pytest.fail raises a BaseException
            print(f"could not delete vhost {self.name} on the cluster: {error}")

    # -- what rabbitmqctl says (blocking: call through asyncio.to_thread)

    def node_ports(self) -> dict[int, str]:
        """AMQP listener port -> node name (each node listens on a port of its own)."""
        return {int(self.cluster.node_url(node).rsplit(":", 1)[1].strip("/")): node for node in self.cluster.nodes}

    def placement(self, witness: str) -> Placement:
        """Which node each connection of the vhost is on, asked of the node `witness`."""
        ports = self.node_ports()
        found: Placement = {}
        for row in self.cluster.ctl_json(witness, "list_connections", "vhost", "port", "client_properties"):
            if row.get("vhost") != self.name:
                continue
            props = {item[0]: item[2] for item in row.get("client_properties") or []}
            found.setdefault(ports.get(row["port"], str(row["port"])), []).append(
                str(props.get("connection_name", "?")))
        return found

    def queue_table(self, witness: str) -> dict[str, dict[str, Any]]:
        """name -> {type, leader, online, members} of the scenario's queues, in one rabbitmqctl call."""
        rows = self.cluster.ctl_json(witness, "list_queues", "-p", self.name, "name", "type", "leader", "online",
                                     "members")
        table = {row["name"]: row for row in rows}
        return {name: table.get(name, {}) for name in QUEUES}

    def leader_and_witness(self) -> tuple[str, str]:
        """The node leading the work queue now, and another node to ask while it is gone."""
        leader = self.cluster.leader(WORK_QUEUE, self.name)
        return leader, next(node for node in self.cluster.nodes if node != leader)


@dataclass
class Pipeline:
    """The running services of the scenario and the probes on their /readyz (producer first)."""

    vhost: ClusterVhost
    smtp: SmtpTestServer
    consumers: ConsumerFleet
    workdir: Path
    producers: list[ServiceProcess] = field(default_factory=list)  # every one started; the last one serves
    leader: str = ""            # leading every queue when the services were ready
    witness: str = ""
    placement: Placement = field(default_factory=dict)
    ready_at: float = 0.0
    probes: ProbeSet | None = None

    @property
    def producer(self) -> ServiceProcess:
        return self.producers[-1]

    @property
    def producer_url(self) -> str:
        return f"http://127.0.0.1:{self.producer.env['HTTP_PORT']}"

    @property
    def producer_probe(self) -> ReadinessProbe:
        assert self.probes is not None
        return self.probes.probes[0]

    @property
    def consumer_probes(self) -> list[ReadinessProbe]:
        assert self.probes is not None
        return self.probes.probes[1:]

    async def start(self) -> None:
        for slot in range(CONSUMERS):
            self.consumers.start(slot)
            if slot == 0:  # alone: it declares the queues, on its node
                await self.consumers.wait_ready(0, STARTUP_TIMEOUT)
        await asyncio.gather(*(self.consumers.wait_ready(slot, STARTUP_TIMEOUT) for slot in range(1, CONSUMERS)))
        self.leader, self.witness = await asyncio.to_thread(self.vhost.leader_and_witness)
        for attempt in range(PLACEMENT_ATTEMPTS):
            env = producer_env(self.vhost.url, PUBLISH_TIMEOUT_SECONDS=5, RETRY_AFTER_SECONDS=1,
                               RECONNECT_MAX_DELAY_SECONDS=1, LOG_LEVEL="INFO")
            self.producers.append(producer_process(env, self.workdir / f"producer{attempt}.log").start())
            await self.producer.wait_ready(timeout=STARTUP_TIMEOUT)
            self.placement = await asyncio.to_thread(self.vhost.placement, self.witness)
            if "producer-service" in self.placement.get(self.leader, []):
                break
            await stop_all_async([self.producer])  # haproxy moves the next one to the next node
        self.ready_at = time.monotonic()
        self.probes = ProbeSet([ReadinessProbe("producer", f"{self.producer_url}/readyz", PROBE_INTERVAL)] + [
            ReadinessProbe(f"email{slot + 1}", self.consumers.url(slot), PROBE_INTERVAL) for slot in range(CONSUMERS)])
        await self.probes.__aenter__()

    async def stop(self) -> None:
        if self.probes is not None:
            await self.probes.stop()
        await stop_all_async([*self.producers, *(p for p in self.consumers.slots if p is not None)])

    def producer_log(self) -> list[Path]:
        return [self.producer.log_path]

    def consumer_log(self, slot: int) -> list[Path]:
        return [self.consumers.process(slot).log_path]

    async def counters(self) -> list[dict[str, float]]:
        """email_messages_total by outcome, per consumer."""
        return [(await scrape(self.consumers.url(slot, "/metrics"))).by_label("email_messages_total", "outcome")
                for slot in range(CONSUMERS)]

    async def queue_depths(self) -> dict[str, int]:
        return {name: await ready_count(self.vhost.url, name) for name in QUEUES}

    async def drain(self, accepted: list[Signup], timeout: float = DRAIN_TIMEOUT) -> float:
        """Wait until every accepted signup is mailed or dead-lettered, the queues but the DLQ are empty and no
        consumer handles anything; returns how long that took."""
        expect_mail = {s.event_id for s in accepted if not s.refused}
        expect_dead = sum(1 for s in accepted if s.refused)
        started = time.monotonic()

        async def drained() -> bool:
            if not expect_mail <= set(self.smtp.by_event()):
                return False
            depths = await self.queue_depths()
            if depths[DEAD_LETTER_QUEUE] < expect_dead or any(depths[q] for q in (WORK_QUEUE, *TIER_QUEUES)):
                return False
            return await self.consumers.in_progress() == 0
        try:
            await eventually(drained, timeout=timeout, interval=0.25,
                             what="every accepted signup mailed or dead-lettered and the queues empty")
        except BaseException:
            missing = expect_mail - set(self.smtp.by_event())
            print(f"\nstill missing {len(missing)} mails; queue depths {await self.queue_depths()}")
            raise
        return time.monotonic() - started


def consumer_env(vhost: ClusterVhost, smtp: SmtpTestServer, dedup_env: dict[str, str]) -> dict[str, str]:
    """The consumers' settings: CONCURRENCY 8, three retry tiers, quick reconnects, dedup in Redis."""
    return email_env(vhost.url, smtp.port, SMTP_TIMEOUT_SECONDS=10, CONCURRENCY=8,
                     RETRY_DELAYS=",".join(f"{d:g}" for d in RETRY_DELAYS), MAX_ATTEMPTS=10,
                     RECONNECT_MAX_DELAY_SECONDS=1, SHUTDOWN_TIMEOUT_SECONDS=5, LOG_LEVEL="info", **dedup_env)
