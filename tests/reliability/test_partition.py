"""Reliability scenario 4: the node leading the work queue is partitioned from the other two nodes and from every
client, then healed.

The cluster (tests/support/partition.py) runs each node in a network namespace of its own behind haproxy on
loopback, with `cluster_partition_handling = pause_minority` and Erlang's net_ticktime at 10 s. Every process of
the run reaches it through the front only. Under a steady signup load the node that leads `email.welcome` is cut
off (epmd, distribution and AMQP alike; no resets) for PARTITION_SECONDS, then healed. What must hold, beyond the
suite's invariant (every 202 is exactly one mail or one dead letter; nothing lost; duplicates within the bound):
- the majority notices (the cut node leaves its running nodes), the work queue gets a leader there, and the cut
  node pauses itself (pause_minority: it says so in its log);
- every client on the cut node moves to the majority while the partition lasts: all three consumers and the
  producer are ready again before the heal;
- the producer answers 503 only while the node is cut off (none before the cut, none once the cluster is whole);
- after the heal the node rejoins, and every quorum queue of the vhost has all three members online again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from local_cluster import ClusterError

from email_service.topology import WORK_QUEUE
from tests.support.partition import PartitionedCluster
from tests.support.probes import ProbeSet, ReadinessProbe
from tests.support.report import FULL
from tests.support.waits import WaitTimedOut, eventually

from .harness import ReliabilityRun, ScenarioConfig
from .invariant import check_invariant
from .test_scenarios import CLIENT_CONCURRENCY, size

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow, pytest.mark.cluster,
              pytest.mark.timeout(900 if FULL else 600)]  # the cluster's boot counts: ~30-90 s

PARTITION_SECONDS = size(20, 30)
NOTICE_WITHIN = 60  # seconds: the majority drops the node (net_ticktime 10 s), clients move, a new leader
REJOIN_WITHIN = 180  # seconds after the heal: the paused node restarts its broker and every replica is back


@dataclass
class PartitionLog:
    """What the chaos saw, for the checks after the run."""

    node: str = ""
    cut: float = 0.0
    healed: float = 0.0
    whole: float = 0.0  # when every queue had its full replica set again
    on_cut_node: list[str] = field(default_factory=list)  # connection names of the clients on it at the cut


async def in_thread(call, *args):
    return await asyncio.to_thread(call, *args)


def answered(check):
    """A check of the cluster that counts "the node asked did not answer in time" as not yet."""

    async def checked() -> bool:
        try:
            return await check()
        except ClusterError:
            return False

    return checked


async def partition_leader_node(run: ReliabilityRun, cluster: PartitionedCluster, log: PartitionLog) -> None:
    vhost = run.vhost.name
    assert run.fleet is not None
    probes = [ReadinessProbe("producer", f"http://127.0.0.1:{run.producer_port}/readyz"),
              *(ReadinessProbe(f"consumer #{slot}", run.fleet.url(slot)) for slot in range(run.config.consumers))]
    async with ProbeSet(probes) as probe_set:
        await run.until_sent(0.1)
        log.on_cut_node = (await in_thread(cluster.connections, vhost)).get(log.node, [])
        cluster.cut(log.node)
        log.cut = time.monotonic()
        # publishes in flight on the cut node may be stored with their confirm lost (the client retries them); the
        # unacked messages of a consumer there are redelivered to the others, and those it had sent go out twice
        run.chaos.record("leader's node partitioned", could_duplicate=CLIENT_CONCURRENCY + run.config.concurrency)

        async def majority_dropped_it() -> bool:
            return log.node not in await in_thread(cluster.running_nodes)

        async def new_leader() -> bool:
            leader = await in_thread(cluster.leader, vhost, WORK_QUEUE)
            return leader is not None and leader != log.node

        async def leader_moved() -> None:
            await eventually(answered(new_leader), timeout=NOTICE_WITHIN, interval=0.2,
                             what=f"a new leader of {WORK_QUEUE} in the majority's queue record")
            run.chaos.figures["new leader after s"] = f"{time.monotonic() - log.cut:.1f}"

        async def noticed() -> None:
            await eventually(answered(majority_dropped_it), timeout=NOTICE_WITHIN, interval=0.2,
                             what=f"the majority noticing that {log.node} is gone")
            run.chaos.timings["cluster detected"] = time.monotonic() - log.cut

        await asyncio.gather(leader_moved(), noticed())
        moved = time.monotonic()
        await eventually(lambda: probe_set.all_ready_since(moved), timeout=NOTICE_WITHIN, interval=0.2,
                         what=f"every client ready on the majority while {log.node} is cut off (logs in {run.workdir})")
        for probe in probes:  # the clients that said "not ready": when they noticed, when they served again
            down = probe.down_intervals(log.cut, time.monotonic())
            if down:
                run.chaos.timings[f"{probe.name} detected"] = down[0][0] - log.cut
                run.chaos.timings[f"{probe.name} recovered"] = down[-1][1] - log.cut
        await asyncio.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - log.cut)))  # the rest of the partition

    cluster.heal(log.node)
    log.healed = time.monotonic()

    async def whole() -> bool:
        if len(await in_thread(cluster.running_nodes)) != len(cluster.names):
            return False
        queues = await in_thread(cluster.quorum_queues, vhost)
        return bool(queues) and all(len(online) == len(cluster.names) for _, online in queues.values())

    try:
        await eventually(answered(whole), timeout=REJOIN_WITHIN, interval=1.0,
                         what=f"{log.node} rejoining and every quorum queue with all {len(cluster.names)} members "
                              "online")
    except WaitTimedOut as exc:
        raise WaitTimedOut(f"{exc}\n{await in_thread(rejoin_state, cluster, vhost, log.node)}") from None
    log.whole = time.monotonic()
    run.chaos.timings["cluster recovered"] = log.whole - log.healed
    placed = ", ".join(f"{name} {log.on_cut_node.count(name)}" for name in sorted(set(log.on_cut_node)))
    run.chaos.figures["on the cut node"] = placed or "no client"


def rejoin_state(cluster: PartitionedCluster, vhost: str, node: str) -> str:
    """What a failed rejoin leaves to look at: the running nodes and the quorum queues' online members as a node
    of the majority sees them, and the end of the healed node's log."""
    lines = []
    for what, ask in (("running", lambda: cluster.running_nodes()), ("queues", lambda: cluster.quorum_queues(vhost))):
        try:
            lines.append(f"{what}: {ask()}")
        except ClusterError as exc:
            lines.append(f"{what}: no answer ({exc})")
    tail = [line[:300] for line in cluster.log_of(node).splitlines()[-25:]]
    return "\n".join([*lines, f"--- {node} log, last lines:", *tail])


async def place_producer_on_the_leaders_node(run: ReliabilityRun, cluster: PartitionedCluster) -> str:
    """The node leading the work queue (the first consumer to declare it put it on its own node); the producer is
    restarted until haproxy's round robin puts its connection there too, so that the cut takes it as well."""
    leader = await in_thread(cluster.leader, run.vhost.name, WORK_QUEUE)
    assert leader, f"{WORK_QUEUE} has no leader before the partition"
    for _ in range(2 * len(cluster.names)):
        if "producer-service" in (await in_thread(cluster.connections, run.vhost.name)).get(leader, []):
            return leader
        run.producer.stop()
        run.producer.start()
        await run.producer.wait_ready(timeout=30)
    raise AssertionError(f"the producer's connection never landed on {leader}")


async def test_partition_of_the_work_queue_leaders_node(scenario, partitioned_cluster, partition_vhost, tmp_path):
    config = ScenarioConfig("partition of the leader's node", signups=size(400, 1800), rate=size(10, 20),
                            heartbeat=2, client_attempts=40, smtp_delay=0.05, drain_timeout=180)
    log = PartitionLog()
    async with scenario(config, partition_vhost) as run:
        log.node = await place_producer_on_the_leaders_node(run, partitioned_cluster)
        await run.drive(lambda run: partition_leader_node(run, partitioned_cluster, log))
        outcome = await run.settle()
    check_invariant(outcome, config, tmp_path)

    minority_log = partitioned_cluster.log_of(log.node)
    assert "minority" in minority_log, f"{log.node} never paused (pause_minority); its log: {minority_log[-2000:]}"
    assert "email-service" in log.on_cut_node, f"no consumer on the leader's node at the cut: {log.on_cut_node}"
    times_503 = [at for signup in outcome.signups for at, answer in signup.answers if answer == "503"]
    outside = [at for at in times_503 if not log.cut <= at <= log.whole]
    assert not outside, (f"{len(outside)} answers 503 outside the partition (cut at {log.cut:.1f}, cluster whole "
                         f"at {log.whole:.1f}): {[f'{at:.1f}' for at in outside[:5]]}")
    assert "producer-service" in log.on_cut_node, f"the producer was not on the cut node: {log.on_cut_node}"
    assert times_503, "the producer was on the cut node, yet no signup got a 503"
