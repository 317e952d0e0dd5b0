"""Issue 9: the whole pipeline on a clustered RabbitMQ while the node leading `email.welcome` is SIGKILLed.

A steady, open-loop stream of signups goes through a producer-service process; three email-service processes
(dedup on, in Redis) send the mails to a real SMTP server. Every process talks to the cluster through the haproxy
front only, in a vhost of its own on the cluster. Then the node that leads the `email.welcome` quorum queue is
SIGKILLed; later it is started again. The first consumer declares every queue, so with RabbitMQ's client-local
leader placement its node leads them all, and the producer is placed there too (haproxy's round robin, checked with
rabbitmqctl): the first kill takes the leaders of all queues, a consumer's and the producer's connections at once.
The load client behaves like a real one: one Idempotency-Key per signup, a 503 (or a dropped connection) is retried
after Retry-After, a bounded number of times. The SMTP server queues a mail as soon as its data is in and answers
250 SMTP_DELAY later, so mails are in flight when their consumer's connection dies.

What must hold, and what is measured (printed, added to the terminal summary and written to tests/cluster/LATEST.md):
- every signup eventually gets a 202; every 202 ends as exactly one mail or as a dead letter with a reason
  (bounces: a 550 for some recipients); nothing lost, no duplicate mail (redeliveries skipped by dedup are counted);
- the producer answers 503 only around the kill and 202 again without a restart; its /readyz is polled throughout
  and the time it was false is reported;
- the consumers reconnect through the front, register again and are ready again; the time from the kill until
  mails flow again is reported;
- the retry tiers and the DLQ are quorum queues that keep a leader and online members after the kill; one mail is
  pushed through a retry tier after each kill (SMTP 451 via defer_next).

Short version (part of `make test`): 20 signups/s, one kill + restart. RELIABILITY_FULL=1: 40 signups/s, the current
leader killed and restarted twice.

Where the pieces are: the fixtures in conftest.py start the pipeline (pipeline.py) and the load (steady_load.py);
kill_cycle.py holds the plan and one kill/recover/restart cycle; failover_outcome.py and failover_figures.py judge
the end, failover_report.py writes the report.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from .failover_outcome import Evidence, evaluate
from .failover_report import publish
from .kill_cycle import PLAN, LeaderKills
from .pipeline import Pipeline
from .steady_load import SteadyLoad

if TYPE_CHECKING:
    from .rabbit_cluster import RabbitCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


async def test_signups_survive_killing_the_leader_of_the_work_queue(
        rabbit_cluster: RabbitCluster, failover_pipeline: Pipeline, steady_load: SteadyLoad,
        leader_kills: LeaderKills, request: pytest.FixtureRequest) -> None:
    pipeline = failover_pipeline
    await steady_load.start()                       # mails flow, warm-up done
    for _ in range(PLAN.kills):
        await leader_kills.cycle(steady_load.load)  # kill the leader, recover, retry tier, restart, rejoin, settle
    await steady_load.stop()                        # every signup has its 202, or its client gave up
    drain_seconds = await pipeline.drain(steady_load.load.accepted())

    evidence = await Evidence.gather(pipeline, steady_load.load)
    outcome = evaluate(evidence, leader_kills.cycles, timings={
        "cluster up (session fixture)": rabbit_cluster.timings.get("up_seconds", 0.0),
        "services started": pipeline.ready_at - pipeline.vhost.began,
        "load": steady_load.seconds,
        "drain after the load": drain_seconds,
        "whole scenario": time.monotonic() - pipeline.vhost.began,
    })
    publish(request, PLAN, pipeline.vhost.name, outcome)
    assert outcome.passed, "failover scenario failed:\n  " + outcome.failures()
