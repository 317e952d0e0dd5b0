"""The plan of the failover scenario and one cycle of it: SIGKILL the node leading `email.welcome`, wait until the
pipeline is back in business, push mails through a retry tier, start the node again and wait until it rejoins.

Invariants:
- every time of a cycle counts from the moment `cluster.sh kill` was called (it returns once the VM is gone): a
  little pessimistic, but nothing the kill causes can come before it;
- "back in business" means every /readyz answers 200 in a sample taken after the kill and a signup first sent after
  the node was gone has its mail;
- a node killed and not yet started again is started by `restore()`, so the cluster is whole for what runs next.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from email_service.topology import WORK_QUEUE
from tests.support.load import SignupLoad
from tests.support.report import FULL
from tests.support.waits import WaitTimedOut, eventually

from .failover_report import write_failure_report
from .pipeline import Pipeline, Placement

if TYPE_CHECKING:
    from tests.cluster.rabbit_cluster import RabbitCluster


@dataclass(frozen=True)
class Plan:
    name: str
    rate: float                 # signups per second, open loop
    warmup_seconds: float       # steady load before the first kill
    kills: int                  # kill + restart cycles
    settle_seconds: float       # steady load after each restart
    bounce_every: int           # every n-th signup goes to an address the SMTP server refuses (550)


PLAN = (Plan("full", rate=40, warmup_seconds=5, kills=2, settle_seconds=5, bounce_every=25) if FULL else
        Plan("short", rate=20, warmup_seconds=2, kills=1, settle_seconds=0.5, bounce_every=25))

DEFERRALS_PER_KILL = 3          # mails answered 451 after each kill: they go through a retry tier
RECOVERY_TIMEOUT = 45           # after a kill: producer and consumers ready, a post-kill signup mailed
REJOIN_TIMEOUT = 60             # restarted node back as an online member of email.welcome


@dataclass
class KillCycle:
    node: str
    placement: Placement
    killed_at: float            # `cluster.sh kill` called
    gone_at: float              # ... and returned: the VM is gone
    killed_wall: float          # killed_at as wall-clock time (the services' logs have wall-clock stamps)
    new_leader: str = ""
    queues_after_kill: dict[str, dict[str, Any]] = field(default_factory=dict)
    recovered_at: float | None = None
    restart_started: float = 0.0
    restart_seconds: float = 0.0
    rejoin_seconds: float = 0.0
    deferred: int = 0

    @property
    def kill_call_seconds(self) -> float:
        return self.gone_at - self.killed_at

    @property
    def producer_was_on_node(self) -> bool:
        return "producer-service" in self.placement.get(self.node, [])

    @property
    def consumers_on_node(self) -> int:
        return self.placement.get(self.node, []).count("email-service")

    @property
    def quiet_end(self) -> float:
        """The end of the window in which the node was down (the restart began)."""
        return self.restart_started or self.recovered_at or self.gone_at


class RecoveryFailed(AssertionError):
    """The pipeline did not come back after a kill; the message says what did not."""


class LeaderKills:
    """The cycles of one scenario, in order; `restore()` starts a node left killed by a failure."""

    def __init__(self, cluster: RabbitCluster, pipeline: Pipeline, plan: Plan) -> None:
        self.cluster = cluster
        self.pipeline = pipeline
        self.plan = plan
        self.cycles: list[KillCycle] = []
        self.killed: str | None = None

    async def cycle(self, load: SignupLoad) -> KillCycle:
        vhost, smtp = self.pipeline.vhost, self.pipeline.smtp
        if self.cycles:
            leader, witness = await asyncio.to_thread(vhost.leader_and_witness)
            placement = await asyncio.to_thread(vhost.placement, witness)
        else:  # found when the producer was placed, nothing failed since
            leader, witness, placement = self.pipeline.leader, self.pipeline.witness, self.pipeline.placement
        assert leader in self.cluster.nodes
        called, called_wall = time.monotonic(), time.time()
        await asyncio.to_thread(self.cluster.kill, leader)
        self.killed = leader
        cycle = KillCycle(leader, placement, killed_at=called, gone_at=time.monotonic(), killed_wall=called_wall)
        self.cycles.append(cycle)
        await self._recovery(cycle, load)

        # the other quorum queues: still quorum, a leader on a surviving node, a majority online
        cycle.new_leader = await asyncio.to_thread(self.cluster.leader, WORK_QUEUE, vhost.name)
        cycle.queues_after_kill = await asyncio.to_thread(vhost.queue_table, witness)

        # one round through a retry tier (its leader was just killed as well): 451 for the next mails
        deferred_before = smtp.deferred
        smtp.defer_next(DEFERRALS_PER_KILL)
        await eventually(lambda: smtp.deferred - deferred_before >= DEFERRALS_PER_KILL, timeout=30,
                         interval=0.05, what="the SMTP server deferring mails after the kill")
        cycle.deferred = smtp.deferred - deferred_before

        cycle.restart_started = time.monotonic()
        await asyncio.to_thread(self.cluster.start, leader)
        cycle.restart_seconds = time.monotonic() - cycle.restart_started
        self.killed = None

        async def member_again() -> bool:
            return leader in await asyncio.to_thread(self.cluster.members, WORK_QUEUE, vhost.name)
        await eventually(member_again, timeout=REJOIN_TIMEOUT, interval=0.5,
                         what=f"{leader} an online member of {WORK_QUEUE} again")
        cycle.rejoin_seconds = time.monotonic() - cycle.restart_started
        await asyncio.sleep(self.plan.settle_seconds)  # steady load after the restart, part of the plan
        return cycle

    async def _recovery(self, cycle: KillCycle, load: SignupLoad) -> None:
        probes, smtp = self.pipeline.probes, self.pipeline.smtp
        assert probes is not None

        def recovered() -> bool:
            accepted_after = {s.event_id for s in load.signups if s.accepted and not s.refused
                              and s.first_sent is not None and s.first_sent > cycle.gone_at}
            mailed_after = {mail.event_id for mail in smtp.accepted_since(cycle.gone_at)}
            return probes.all_ready_since(cycle.killed_at) and bool(accepted_after & mailed_after)
        try:
            await eventually(recovered, timeout=RECOVERY_TIMEOUT, interval=0.05,
                             what="producer and consumers ready and a post-kill signup mailed")
        except WaitTimedOut as error:
            failure = f"no recovery within {RECOVERY_TIMEOUT} s of kill {len(self.cycles)}"
            diagnosis = self.diagnosis(cycle, load)
            write_failure_report(self.plan.name, failure, diagnosis)
            raise RecoveryFailed(f"{failure}: {diagnosis}") from error
        cycle.recovered_at = time.monotonic()

    def diagnosis(self, cycle: KillCycle, load: SignupLoad) -> str:
        """What did not come back after the kill, for the failure message."""
        probes, producer_log = self.pipeline.probes, self.pipeline.producer.output()
        assert probes is not None
        answers = Counter(what for s in load.signups for at, what in s.answers if at > cycle.killed_at)
        reasons = Counter(re.findall(r'"msg": "signup not accepted".*?"reason": "([a-z_]+)"', producer_log))
        hint = ""
        if reasons.get("nacked", 0) > 10 and producer_log.count("broker nacked a publish") == 0:
            hint = ("\nThe producer's channel nacks every publish and the producer keeps using it (its /readyz stays "
                    "true): RabbitMQ 3.10 keeps the dead leader in a channel that first publishes to a quorum queue "
                    "right after the leader's node died. The producer must open a new channel after a nack.")
        return (f"killed {cycle.node}; connections on it before: {cycle.placement.get(cycle.node)}; "
                f"answers since the kill: {dict(sorted(answers.items()))}; producer's 503 reasons (whole run): "
                f"{dict(reasons)}; /readyz now: {', '.join(f'{p.name}={p.ready}' for p in probes.probes)}; "
                f"mails since the kill: {len(self.pipeline.smtp.accepted_since(cycle.killed_at))}" + hint)

    async def restore(self) -> None:
        """Start the node a failure left killed (never raises: the teardown goes on)."""
        if self.killed is not None:
            try:
                await asyncio.to_thread(self.cluster.start, self.killed)
            except BaseException as error:  # noqa: BLE001 - the teardown must go on; say what is left
                print(f"could not start {self.killed} again: {error}")
            self.killed = None
