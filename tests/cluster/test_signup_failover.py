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
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import aio_pika
import httpx
import pytest
from local_cluster import Cluster
from prometheus_client.parser import text_string_to_metric_families

from email_service.wire import REASON_HEADER
from tests.conftest import eventually, free_port
from tests.support.amqp import read_queue
from tests.support.services import ServiceProcess, email_process, producer_process
from tests.support.smtp_server import ReceivedMail, SmtpTestServer, _Handler

if TYPE_CHECKING:
    from tests.cluster.conftest import RabbitCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FULL = os.environ.get("RELIABILITY_FULL") == "1"
# The committed LATEST.md is rewritten by full runs (RELIABILITY_FULL=1) or when asked (RECORD_LATEST=1);
# the short version inside `make test` writes to the temp folder, so a test run leaves the tree clean.
LATEST = (Path(__file__).with_name("LATEST.md")
          if "1" in (os.environ.get("RELIABILITY_FULL"), os.environ.get("RECORD_LATEST"))
          else Path(tempfile.gettempdir()) / "welcome-mail-cluster-LATEST.md")

WORK_QUEUE = "email.welcome"
DLQ = "email.welcome.dlq"
RETRY_DELAYS = (0.5, 1.0, 2.0)
TIER_QUEUES = tuple(f"{WORK_QUEUE}.retry.{delay:g}s" for delay in RETRY_DELAYS)
CONSUMERS = 3
DEFERRALS_PER_KILL = 3          # mails answered 451 after each kill: they go through a retry tier
SMTP_DELAY = 0.3                # the SMTP server's 250 comes this long after it has queued the mail: mails are in
                                # flight when a node dies, their acks are lost with the connection and RabbitMQ
                                # redelivers them (dedup's job)


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

# bounds: generous, this 2-core machine is shared (the measured values are what the report is about)
STARTUP_TIMEOUT = 30            # one service process ready
RECOVERY_TIMEOUT = 45           # after a kill: producer and consumers ready, a post-kill signup mailed
REJOIN_TIMEOUT = 60             # restarted node back as an online member of email.welcome
DRAIN_TIMEOUT = 90              # after the load: every accepted signup mailed or dead-lettered
MAX_FAILOVER_SECONDS = 30       # producer 503s / consumer not ready after a kill, at most
CLIENT_MAX_ATTEMPTS = 30        # the load client's retries of one signup
CLIENT_MAX_SECONDS = 90         # ... and its time budget for one signup
PROBE_INTERVAL = 0.1            # /readyz polling


# --- the cluster: a vhost of our own, queue facts, where connections are ------------------------------------------

def node_port_map(cluster: RabbitCluster) -> dict[int, str]:
    """AMQP listener port -> node name (cluster.sh gives each node its own port)."""
    return {int(cluster.node_url(node).rsplit(":", 1)[1].strip("/")): node for node in cluster.nodes}


def ctl_json(node: str, *args: str) -> list[dict]:
    return Cluster.from_env().node(node).ctl_json(*args)


def queue_table(node: str, vhost: str) -> dict[str, dict]:
    """name -> {type, leader, online, members} for every queue of the vhost, in one rabbitmqctl call."""
    rows = ctl_json(node, "list_queues", "-p", vhost, "name", "type", "leader", "online", "members")
    return {row["name"]: row for row in rows}


def connections_by_node(node: str, vhost: str, ports: dict[int, str]) -> dict[str, list[str]]:
    """node -> connection names (producer-service / email-service) in the vhost."""
    placement: dict[str, list[str]] = {}
    for row in ctl_json(node, "list_connections", "vhost", "port", "client_properties"):
        if row.get("vhost") != vhost:
            continue
        props = {item[0]: item[2] for item in row.get("client_properties") or []}
        placement.setdefault(ports.get(row["port"], str(row["port"])), []).append(
            str(props.get("connection_name", "?")))
    return placement


class ClusterVhost:
    def __init__(self, cluster: RabbitCluster) -> None:
        self.cluster = cluster
        self.name = f"wm-failover-{uuid.uuid4().hex[:8]}"
        self.url = f"{cluster.url.rstrip('/')}/{self.name}"

    def create(self) -> None:
        node = self.cluster.nodes[0]
        self.cluster.ctl(node, "add_vhost", self.name)
        self.cluster.ctl(node, "set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def delete(self) -> None:
        """Never fails the teardown: a vhost left behind is reported, and goes with `cluster.sh down` anyway."""
        try:
            node = self.cluster.running_nodes()[0]
            self.cluster.ctl(node, "delete_vhost", self.name)
        except BaseException as error:  # noqa: BLE001 - pytest.fail raises a BaseException
            print(f"could not delete vhost {self.name} on the cluster: {error}")


# --- SMTP with arrival times ------------------------------------------------------------------------------------

MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^@>\s]+)@", re.IGNORECASE | re.MULTILINE)


class TimedMails(list):
    """SmtpTestServer.mails that also remembers when each mail was accepted and its event id (from the
    Message-ID, <event_id@domain>). Appends happen in the SMTP thread, under the server's lock."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.event_ids: list[str] = []

    def append(self, mail) -> None:
        match = MESSAGE_ID.search(mail.data if isinstance(mail.data, bytes) else mail.data.encode())
        self.event_ids.append(match.group(1).decode() if match else "?")
        self.times.append(time.monotonic())
        super().append(mail)


class QueueThenReply(_Handler):
    """Like a real MTA: the mail is queued (recorded) as soon as its data is in; the 250 then takes `delay` to reach
    the client (a busy server, a long link). A client that gives up in that time has sent the mail all the same.
    (SmtpTestServer's own handler records the mail only after the delay, so an abandoned send would not count.)"""

    async def handle_DATA(self, server, session, envelope):
        test_server = self.server
        with test_server.lock:
            if test_server.deferrals:
                test_server.deferrals -= 1
                test_server.deferred += 1
                return test_server.deferral_reply
            test_server.mails.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        if test_server.delay:
            await asyncio.sleep(test_server.delay)
        return "250 2.0.0 accepted"


def mailed_event_ids(server: SmtpTestServer) -> list[tuple[float, str]]:
    """(accepted at, event id) of every mail so far."""
    with server.lock:
        return list(zip(server.mails.times, server.mails.event_ids))


# --- readiness probes --------------------------------------------------------------------------------------------

@dataclass
class Probe:
    """Polls one /readyz and keeps every answer: (monotonic time, ready?)."""

    name: str
    url: str
    samples: list[tuple[float, bool]] = field(default_factory=list)

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                ok = (await client.get(self.url, timeout=1)).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.samples.append((time.monotonic(), ok))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), PROBE_INTERVAL)

    @property
    def ready(self) -> bool:
        return bool(self.samples) and self.samples[-1][1]

    def down_intervals(self, since: float, until: float = float("inf")) -> list[tuple[float, float]]:
        """Periods in which /readyz did not answer 200 (from the first failing to the next good sample)."""
        intervals, start = [], None
        for at, ok in self.samples:
            if at < since or at > until:
                continue
            if not ok and start is None:
                start = at
            elif ok and start is not None:
                intervals.append((start, at))
                start = None
        if start is not None:
            intervals.append((start, self.samples[-1][0]))
        return intervals

    def down_seconds(self, since: float, until: float = float("inf")) -> float:
        return sum(end - start for start, end in self.down_intervals(since, until))


# --- the load client ---------------------------------------------------------------------------------------------

@dataclass
class Signup:
    n: int
    key: str
    email: str
    bounce: bool
    answers: list[tuple[float, str]] = field(default_factory=list)  # (time, "202"/"503"/"ConnectError"...)
    first_sent: float = 0.0
    event_id: str | None = None
    accepted_at: float | None = None


class LoadClient:
    """Open loop: a new signup every 1/rate s whatever the others do; each one retried like a real client would."""

    def __init__(self, base_url: str, plan: Plan, smtp: SmtpTestServer) -> None:
        self.base_url = base_url
        self.plan = plan
        self.smtp = smtp
        self.tag = uuid.uuid4().hex[:6]
        self.signups: list[Signup] = []
        self.tasks: set[asyncio.Task] = set()
        self.client = httpx.AsyncClient(base_url=base_url, timeout=15,
                                        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50,
                                                            # below uvicorn's 5 s keep-alive, so an idle
                                                            # connection is dropped here before the server
                                                            # closes it under a request
                                                            keepalive_expiry=2))

    async def run(self, stop: asyncio.Event) -> None:
        started = time.monotonic()
        n = 0
        while not stop.is_set():
            n += 1
            bounce = n % self.plan.bounce_every == 0
            email = f"{'bounce' if bounce else 'user'}{n}.{self.tag}@example.com"
            if bounce:
                self.smtp.reject_recipient(email, "550 5.1.1 no such user")
            signup = Signup(n, f"failover-{self.tag}-{n}", email, bounce)
            self.signups.append(signup)
            task = asyncio.create_task(self._post(signup))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            next_at = started + n / self.plan.rate
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))

    async def _post(self, signup: Signup) -> None:
        signup.first_sent = time.monotonic()
        deadline = signup.first_sent + CLIENT_MAX_SECONDS
        for _ in range(CLIENT_MAX_ATTEMPTS):
            wait = 0.5
            try:
                response = await self.client.post(
                    "/v1/signups", json={"email": signup.email, "name": f"Failover {signup.n}", "locale": "en"},
                    headers={"Idempotency-Key": signup.key})
            except httpx.HTTPError as error:  # the producer itself is never down here, but a client must cope
                signup.answers.append((time.monotonic(), type(error).__name__))
            else:
                signup.answers.append((time.monotonic(), str(response.status_code)))
                if response.status_code == 202:
                    signup.event_id = response.json()["event_id"]
                    signup.accepted_at = time.monotonic()
                    return
                if response.status_code != 503:
                    return  # a 4xx is a bug in this test, reported as not accepted
                wait = float(response.headers.get("Retry-After", "1"))
            if time.monotonic() + wait > deadline:
                return
            await asyncio.sleep(wait)

    async def finish(self, timeout: float) -> None:
        """Let the signups still retrying finish (bounded), abandon the rest, close the client."""
        if self.tasks and timeout > 0:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        left = set(self.tasks)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        if not self.client.is_closed:
            await self.client.aclose()

    def answers(self, what: str) -> list[float]:
        """When the producer answered `what` (a status code, or an httpx error name)."""
        return sorted(at for s in self.signups for at, answer in s.answers if answer == what)

    def transport_errors(self) -> list[tuple[float, str]]:
        """Requests that got no HTTP answer at all (e.g. a keep-alive connection closed by the server as it was
        reused): retried like a 503, but not the broker's doing."""
        return sorted((at, what) for s in self.signups for at, what in s.answers if not what.isdigit())


# --- the services -------------------------------------------------------------------------------------------------

def metric_values(text: str, name: str) -> dict[str, float]:
    """label value (of the first label) -> value, for one metric family in Prometheus text format."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[next(iter(sample.labels.values()), "")] = sample.value
    return out


@dataclass
class Consumer:
    index: int
    proc: ServiceProcess
    metrics_port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    async def counters(self, client: httpx.AsyncClient) -> dict[str, float]:
        text = (await client.get(f"{self.base}/metrics", timeout=5)).text
        values = metric_values(text, "email_messages_total")
        values["in_progress"] = metric_values(text, "email_in_progress").get("", 0.0)
        return values

    def reconnects(self, since: float = 0.0, until: float = float("inf")) -> int:
        return len(log_times(self.proc.output(), "broker connection or channel lost, reconnecting", since, until))


def log_times(text: str, message: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
    """Wall-clock times (epoch seconds) of the JSON log lines with this "msg", within [since, until)."""
    times = []
    for line in text.splitlines():
        if f'"msg": "{message}"' not in line:
            continue
        with contextlib.suppress(ValueError, KeyError):
            at = datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
            if since <= at < until:
                times.append(at)
    return times


def stop_all(procs: list[ServiceProcess]) -> None:
    """SIGTERM to all at once (they shut down in parallel), wait, then SIGKILL what is left; close the logs."""
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.stop()  # a second SIGTERM (forced exit) and SIGKILL only for a process still running


async def wait_ready(client: httpx.AsyncClient, url: str, what: str, proc: ServiceProcess) -> None:
    async def ready() -> bool:
        if proc.proc is not None and proc.proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.proc.returncode}:\n{proc.output()[-3000:]}")
        try:
            return (await client.get(url, timeout=1)).status_code == 200
        except httpx.HTTPError:
            return False
    await eventually(ready, timeout=STARTUP_TIMEOUT, interval=0.1, what=f"{what} ready")


# --- one kill cycle ------------------------------------------------------------------------------------------------

@dataclass
class KillCycle:
    node: str
    placement: dict[str, list[str]]
    killed_at: float            # `cluster.sh kill` called
    gone_at: float              # ... and returned: the VM is gone
    killed_wall: float          # killed_at as wall-clock time (the services' logs have wall-clock stamps)
    new_leader: str = ""
    queues_after_kill: dict[str, dict] = field(default_factory=dict)
    recovered_at: float | None = None
    restart_started: float = 0.0
    restart_seconds: float = 0.0
    rejoin_seconds: float = 0.0
    restarted_at: float = 0.0
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


def recovery_diagnosis(cycle: KillCycle, load: LoadClient, smtp: SmtpTestServer, probes: list[Probe],
                       producer: ServiceProcess) -> str:
    """What did not come back after the kill, for the failure message."""
    after = [what for s in load.signups for at, what in s.answers if at > cycle.killed_at]
    answers = {what: after.count(what) for what in sorted(set(after))}
    reasons: dict[str, int] = {}
    for match in re.finditer(r'"msg": "signup not accepted".*?"reason": "([a-z_]+)"', producer.output()):
        reasons[match.group(1)] = reasons.get(match.group(1), 0) + 1
    mailed_after = sum(1 for at, _ in mailed_event_ids(smtp) if at > cycle.killed_at)
    hint = ""
    if reasons.get("nacked", 0) > 10 and producer.output().count("broker nacked a publish") == 0:
        hint = ("\nThe producer's channel nacks every publish and the producer keeps using it (its /readyz stays "
                "true): RabbitMQ 3.10 keeps the dead leader in a channel that first publishes to a quorum queue "
                "right after the leader's node died. The producer must open a new channel after a nack.")
    return (f"killed {cycle.node}; connections on it before: {cycle.placement.get(cycle.node)}; "
            f"answers since the kill: {answers}; producer's 503 reasons (whole run): {reasons}; "
            f"/readyz now: {', '.join(f'{p.name}={p.ready}' for p in probes)}; mails since the kill: {mailed_after}"
            + hint)


def longest_gap(times: list[float], start: float, end: float) -> tuple[float, float]:
    """The longest pause between mail acceptances that overlaps [start, end): (gap start, gap end)."""
    best = (start, start)
    previous = max((t for t in times if t <= start), default=start)
    for at in sorted(t for t in times if start < t <= end):
        if at - previous > best[1] - best[0]:
            best = (previous, at)
        previous = at
    return best


# --- the test -----------------------------------------------------------------------------------------------------

async def test_signups_survive_killing_the_leader_of_the_work_queue(
        rabbit_cluster: RabbitCluster, dedup_env: dict[str, str], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    cluster = rabbit_cluster
    plan = PLAN
    begun = time.monotonic()
    running = await asyncio.to_thread(cluster.running_nodes)
    assert sorted(running) == sorted(cluster.nodes), f"the cluster must start healthy, running: {running}"
    ports = await asyncio.to_thread(node_port_map, cluster)

    vhost = ClusterVhost(cluster)
    await asyncio.to_thread(vhost.create)
    smtp = SmtpTestServer(free_port())
    smtp.mails = TimedMails()
    smtp.delay = SMTP_DELAY
    smtp.controller.handler = QueueThenReply(smtp)
    smtp.start()
    http = httpx.AsyncClient()
    procs: list[ServiceProcess] = []
    consumers: list[Consumer] = []
    killed: str | None = None
    load: LoadClient | None = None
    load_task: asyncio.Task | None = None
    stop_load = asyncio.Event()
    stop_probes = asyncio.Event()
    probe_tasks: list[asyncio.Task] = []
    try:
        # Start order matters: consumer 1 declares the topology, so its node leads every queue; with haproxy's
        # round robin, consumers 2 and 3 land on the other nodes and the producer (4th) on consumer 1's node
        # (checked below).
        email_env = {
            "AMQP_URL": vhost.url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port), "SMTP_SECURITY": "none",
            "SMTP_TIMEOUT_SECONDS": "10", "MAIL_FROM": "Acme <welcome@acme.test>", "METRICS_HOST": "127.0.0.1",
            "CONCURRENCY": "8", "RETRY_DELAYS": ",".join(f"{d:g}" for d in RETRY_DELAYS), "MAX_ATTEMPTS": "10",
            "RECONNECT_MAX_DELAY_SECONDS": "1", "SHUTDOWN_TIMEOUT_SECONDS": "5", "LOG_LEVEL": "info", **dedup_env,
        }
        for i in range(CONSUMERS):
            port = free_port()
            proc = email_process({**email_env, "METRICS_PORT": str(port)}, tmp_path / f"email{i + 1}.log").start()
            procs.append(proc)
            consumers.append(Consumer(i + 1, proc, port))
            if i == 0:  # the first one alone: it declares the queues, on its node
                await wait_ready(http, f"{consumers[0].base}/readyz", "email-service 1", proc)
        await asyncio.gather(*(wait_ready(http, f"{c.base}/readyz", f"email-service {c.index}", c.proc)
                               for c in consumers[1:]))
        http_port = free_port()
        producer_url = f"http://127.0.0.1:{http_port}"
        producer_env = {
            "AMQP_URL": vhost.url, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(http_port),
            "PUBLISH_TIMEOUT_SECONDS": "5", "RETRY_AFTER_SECONDS": "1", "RECONNECT_MAX_DELAY_SECONDS": "1",
            "LOG_LEVEL": "INFO"}
        # the first kill should take the producer's connection too (the hardest case for it): round robin puts it
        # on consumer 1's node, unless another connection came through the front in between; then start it anew
        # (haproxy moves it to the next node), at most twice
        leader = await asyncio.to_thread(cluster.leader, WORK_QUEUE, vhost.name)
        witness = next(node for node in cluster.nodes if node != leader)
        for attempt in range(3):
            producer = producer_process(producer_env, tmp_path / f"producer{attempt}.log").start()
            procs.append(producer)
            await wait_ready(http, f"{producer_url}/readyz", "producer-service", producer)
            placement = await asyncio.to_thread(connections_by_node, witness, vhost.name, ports)
            if "producer-service" in placement.get(leader, []):
                break
            await asyncio.to_thread(stop_all, [producer])
        producer_pid = producer.proc.pid
        services_ready_at = time.monotonic()

        probes = [Probe("producer", f"{producer_url}/readyz")] + [
            Probe(f"email{c.index}", f"{c.base}/readyz") for c in consumers]
        probe_tasks = [asyncio.create_task(p.run(http, stop_probes)) for p in probes]
        producer_probe, consumer_probes = probes[0], probes[1:]

        load = LoadClient(producer_url, plan, smtp)
        load_task = asyncio.create_task(load.run(stop_load))
        load_started = time.monotonic()

        def mails_after(at: float) -> int:
            with smtp.lock:
                return sum(1 for t in smtp.mails.times if t > at)

        await eventually(lambda: mails_after(load_started) >= 5, timeout=30, interval=0.05,
                         what="mails flowing before the kill")
        await asyncio.sleep(max(0.0, plan.warmup_seconds - (time.monotonic() - load_started)))

        cycles: list[KillCycle] = []
        for index in range(plan.kills):
            if index > 0:  # for the first kill: found above, nothing failed since
                leader = await asyncio.to_thread(cluster.leader, WORK_QUEUE, vhost.name)
                witness = next(node for node in cluster.nodes if node != leader)
                placement = await asyncio.to_thread(connections_by_node, witness, vhost.name, ports)
            assert leader in cluster.nodes
            called, called_wall = time.monotonic(), time.time()
            await asyncio.to_thread(cluster.kill, leader)
            killed = leader
            # times count from the kill command (it returns once the VM is gone): a little pessimistic, but
            # nothing the kill causes can come before it
            cycle = KillCycle(leader, placement, killed_at=called, gone_at=time.monotonic(), killed_wall=called_wall)
            cycles.append(cycle)

            # back in business: every consumer registered again, the producer ready, and a signup first sent after
            # the node was gone has its mail
            def recovered() -> bool:
                accepted_after = {s.event_id for s in load.signups
                                  if s.event_id and s.first_sent > cycle.gone_at and not s.bounce}
                mailed_after = {event_id for at, event_id in mailed_event_ids(smtp) if at > cycle.gone_at}
                return (all(p.ready for p in probes)
                        and all(p.samples[-1][0] > cycle.killed_at for p in probes)
                        and bool(accepted_after & mailed_after))
            try:
                await eventually(recovered, timeout=RECOVERY_TIMEOUT, interval=0.05,
                                 what="producer and consumers ready and a post-kill signup mailed")
            except BaseException:
                diagnosis = recovery_diagnosis(cycle, load, smtp, probes, producer)
                LATEST.write_text(f"# Clustered RabbitMQ: killing the leader of `email.welcome` under load\n\n"
                                  f"{plan.name} version, {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}: **FAIL**, "
                                  f"no recovery within {RECOVERY_TIMEOUT} s of kill {len(cycles)}. "
                                  f"{service_code()}\n\n{diagnosis}\n")
                print("\n" + diagnosis)
                raise
            cycle.recovered_at = time.monotonic()

            # the other quorum queues: still quorum, a leader on a surviving node, a majority online
            cycle.new_leader = await asyncio.to_thread(cluster.leader, WORK_QUEUE, vhost.name)
            table = await asyncio.to_thread(queue_table, witness, vhost.name)
            cycle.queues_after_kill = {name: table.get(name, {}) for name in (WORK_QUEUE, *TIER_QUEUES, DLQ)}

            # one round through a retry tier (its leader was just killed as well): 451 for the next mails
            deferred_before = smtp.deferred
            smtp.defer_next(DEFERRALS_PER_KILL)
            await eventually(lambda: smtp.deferred - deferred_before >= DEFERRALS_PER_KILL, timeout=30,
                             interval=0.05, what="the SMTP server deferring mails after the kill")
            cycle.deferred = smtp.deferred - deferred_before

            started = cycle.restart_started = time.monotonic()
            await asyncio.to_thread(cluster.start, leader)
            cycle.restart_seconds = time.monotonic() - started
            killed = None
            cycle.restarted_at = time.monotonic()

            async def member_again() -> bool:
                return leader in await asyncio.to_thread(cluster.members, WORK_QUEUE, vhost.name)
            await eventually(member_again, timeout=REJOIN_TIMEOUT, interval=0.5,
                             what=f"{leader} an online member of {WORK_QUEUE} again")
            cycle.rejoin_seconds = time.monotonic() - started
            await asyncio.sleep(plan.settle_seconds)

        stop_load.set()
        await load_task
        load_seconds = time.monotonic() - load_started
        await load.finish(timeout=CLIENT_MAX_SECONDS + 15)

        # drain: every accepted signup mailed or dead-lettered, nothing in flight, every queue empty
        accepted = [s for s in load.signups if s.event_id]
        expect_mail = {s.event_id for s in accepted if not s.bounce}
        expect_dead = {s.event_id for s in accepted if s.bounce}

        async def queue_depths() -> dict[str, int]:
            connection = await aio_pika.connect(vhost.url)
            try:
                channel = await connection.channel()
                return {name: (await channel.declare_queue(name, passive=True)).declaration_result.message_count
                        for name in (WORK_QUEUE, *TIER_QUEUES, DLQ)}
            finally:
                await connection.close()

        async def drained() -> bool:
            mailed = {event_id for _, event_id in mailed_event_ids(smtp)}
            if not expect_mail <= mailed:
                return False
            depths = await queue_depths()
            if depths[DLQ] < len(expect_dead) or any(depths[q] for q in (WORK_QUEUE, *TIER_QUEUES)):
                return False
            counters = [await c.counters(http) for c in consumers]
            return all(c["in_progress"] == 0 for c in counters)
        drain_started = time.monotonic()
        try:
            await eventually(drained, timeout=DRAIN_TIMEOUT, interval=0.25,
                             what="every accepted signup mailed or dead-lettered and the queues empty")
        except BaseException:
            missing = expect_mail - {event_id for _, event_id in mailed_event_ids(smtp)}
            print(f"\nstill missing {len(missing)} mails; queue depths {await queue_depths()}")
            raise
        drain_seconds = time.monotonic() - drain_started

        counters = [await c.counters(http) for c in consumers]
        dead_letters = await read_queue(vhost.url, DLQ)
        stop_probes.set()
        await asyncio.gather(*probe_tasks, return_exceptions=True)
        producer_alive = producer.proc.poll() is None and producer.proc.pid == producer_pid
        final_ready = {p.name: p.ready for p in probes}

        outcome = evaluate(plan, load, smtp, dead_letters, counters, consumers, cycles, producer_probe,
                           consumer_probes, producer_alive, final_ready, producer.output())
        outcome["timings"] = {
            "cluster up (session fixture)": cluster.timings.get("up_seconds", 0.0),
            "services started": services_ready_at - begun,
            "load": load_seconds,
            "drain after the load": drain_seconds,
            "whole scenario": time.monotonic() - begun,
        }
        report = render(plan, vhost.name, outcome, cycles)
        LATEST.write_text(report)
        print("\n" + report)
        publish_summary(request, report)
        request.node.user_properties.extend(outcome["table"].items())

        failed = [f"{name}: {detail}" for name, ok, detail in outcome["checks"] if not ok]
        assert not failed, "failover scenario failed:\n  " + "\n  ".join(failed)
    finally:
        stop_load.set()
        stop_probes.set()
        if load is not None:
            if load_task is not None:
                await asyncio.gather(load_task, return_exceptions=True)
            await load.finish(timeout=0)  # after a failure: abandon the signups still retrying
        for task in probe_tasks:
            task.cancel()
        await asyncio.gather(*probe_tasks, return_exceptions=True)
        await asyncio.to_thread(stop_all, procs)
        await http.aclose()
        smtp.stop()
        if killed is not None:  # leave the cluster whole for whatever runs next
            with contextlib.suppress(BaseException):
                await asyncio.to_thread(cluster.start, killed)
        await asyncio.to_thread(vhost.delete)


# --- evaluation and report ----------------------------------------------------------------------------------------

def evaluate(plan: Plan, load: LoadClient, smtp: SmtpTestServer, dead_letters, counters: list[dict],
             consumers: list[Consumer], cycles: list[KillCycle], producer_probe: Probe,
             consumer_probes: list[Probe], producer_alive: bool, final_ready: dict[str, bool],
             producer_log: str) -> dict:
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append((name, bool(ok), detail))

    signups = load.signups
    accepted = [s for s in signups if s.event_id]
    by_event = {s.event_id: s for s in accepted}
    mails = mailed_event_ids(smtp)
    mail_count: dict[str, int] = {}
    for _, event_id in mails:
        mail_count[event_id] = mail_count.get(event_id, 0) + 1
    dead: dict[str, list[str]] = {}
    for message in dead_letters:
        reason = (message.headers or {}).get(REASON_HEADER)
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        dead.setdefault(str(message.message_id), []).append(reason)

    mailed_ids, dead_ids = set(mail_count), set(dead)
    lost = [s for s in accepted if s.event_id not in mailed_ids and s.event_id not in dead_ids]
    both = sorted(mailed_ids & dead_ids)
    duplicate_mails = sum(n - 1 for n in mail_count.values())
    duplicate_dead = sum(len(reasons) - 1 for reasons in dead.values())
    strangers = sorted((mailed_ids | dead_ids) - set(by_event))
    wrong_way = [s.n for s in accepted if (s.event_id in dead_ids) != s.bounce]
    no_reason = [event_id for event_id, reasons in dead.items() if any(r in ("", "None") for r in reasons)]
    transport = load.transport_errors()
    suppressed = sum(c.get("duplicate", 0.0) for c in counters)
    retried = sum(c.get("retried", 0.0) for c in counters)

    check("every signup accepted (202) within the client's retries", len(accepted) == len(signups),
          f"{len(signups) - len(accepted)} of {len(signups)} never got a 202")
    check("nothing lost", not lost, f"{len(lost)} accepted signups neither mailed nor dead-lettered: "
          f"{[s.n for s in lost[:10]]}")
    check("no duplicate mail (dedup on)", duplicate_mails == 0, f"{duplicate_mails} duplicate mails")
    check("no event both mailed and dead-lettered", not both, f"{both[:5]}")
    check("mails and dead letters only for accepted signups", not strangers, f"{strangers[:5]}")
    check("bounces dead-lettered, the rest mailed", not wrong_way, f"signups {wrong_way[:10]}")
    check("every dead letter has a reason", not no_reason, f"{no_reason[:5]}")
    check("dead letters are smtp_rejected", all(r == "smtp_rejected" for rs in dead.values() for r in rs),
          f"{sorted({r for rs in dead.values() for r in rs})}")
    check("producer kept running (no restart)", producer_alive, "producer-service process exited or was replaced")
    check("all /readyz true at the end", all(final_ready.values()), f"{final_ready}")
    check("retry tier used after each kill", retried >= DEFERRALS_PER_KILL * len(cycles),
          f"retried={retried:g}, deferred by SMTP={smtp.deferred}")

    unavailable_at = load.answers("503")
    reconnects = [c.reconnects() for c in consumers]
    producer_reconnects = len(log_times(producer_log, "broker connection lost, reconnecting"))
    per_cycle = []
    for index, cycle in enumerate(cycles):
        window_end = cycles[index + 1].killed_at if index + 1 < len(cycles) else float("inf")
        wall_end = cycles[index + 1].killed_wall if index + 1 < len(cycles) else float("inf")
        cycle_reconnects = [c.reconnects(cycle.killed_wall, wall_end) for c in consumers]
        cycle_producer_reconnects = len(log_times(producer_log, "broker connection lost, reconnecting",
                                                  cycle.killed_wall, wall_end))
        mine = [at for at in unavailable_at if cycle.killed_at - 1 <= at < window_end]
        producer_failover = (max(mine) - cycle.killed_at) if mine else 0.0
        producer_down = producer_probe.down_seconds(cycle.killed_at - 1, window_end)
        consumer_down = [p.down_seconds(cycle.killed_at - 1, window_end) for p in consumer_probes]
        consumers_back = max((end for p in consumer_probes
                              for _, end in p.down_intervals(cycle.killed_at - 1, window_end)),
                             default=cycle.killed_at) - cycle.killed_at
        # mail deliveries between the kill and the restart: the longest pause, and what signups sent in that time
        # waited for their mail (503 retries included)
        times = sorted(t for t, _ in mails)
        quiet_end = cycle.restart_started or cycle.recovered_at or cycle.gone_at
        gap = longest_gap(times, cycle.killed_at, quiet_end)
        mailed_at = {event_id: at for at, event_id in reversed(mails)}  # the first mail of each event
        sent_then = [s for s in accepted if not s.bounce and cycle.killed_at <= s.first_sent <= quiet_end
                     and s.event_id in mailed_at]
        worst_wait = max((mailed_at[s.event_id] - s.first_sent for s in sent_then), default=float("nan"))
        first_post_kill = min((mailed_at[s.event_id] for s in sent_then if s.first_sent > cycle.gone_at),
                              default=float("nan"))
        queues_ok = []
        for name, row in cycle.queues_after_kill.items():
            online = row.get("online") or []
            ok = (row.get("type") == "quorum" and row.get("leader") not in (None, "", cycle.node)
                  and cycle.node not in online and len(online) >= 2)
            queues_ok.append((name, ok, row.get("leader"), len(online)))
        per_cycle.append({
            "node": cycle.node, "new_leader": cycle.new_leader,
            "producer_on_node": cycle.producer_was_on_node, "consumers_on_node": cycle.consumers_on_node,
            "producer_failover": producer_failover, "producer_not_ready": producer_down,
            "unavailable": len(mine), "consumer_not_ready": consumer_down, "consumers_ready_again": consumers_back,
            "mail_gap": gap[1] - gap[0], "mail_gap_from": gap[0] - cycle.killed_at,
            "mails_flow_again": max(0.0, gap[1] - cycle.killed_at), "worst_wait": worst_wait,
            "first_post_kill_mail": first_post_kill - cycle.killed_at,
            "recovered": (cycle.recovered_at or float("nan")) - cycle.killed_at,
            "restart": cycle.restart_seconds, "rejoin": cycle.rejoin_seconds, "queues": queues_ok,
            "kill_call": cycle.kill_call_seconds,
        })
        label = f"kill {index + 1} ({cycle.node})"
        check(f"{label}: new leader on a surviving node", cycle.new_leader not in ("", cycle.node),
              cycle.new_leader)
        check(f"{label}: retry tiers and DLQ quorum with a leader and a majority online", all(q[1] for q in queues_ok),
              f"{cycle.queues_after_kill}")
        check(f"{label}: producer 503s only within {MAX_FAILOVER_SECONDS}s of the kill",
              producer_failover <= MAX_FAILOVER_SECONDS, f"{producer_failover:.1f}s")
        check(f"{label}: consumers ready again within {MAX_FAILOVER_SECONDS}s",
              consumers_back <= MAX_FAILOVER_SECONDS, f"{consumers_back:.1f}s")
        # /readyz is polled every PROBE_INTERVAL; a reconnect faster than that (the producer's takes ~20 ms) can
        # fall between two polls, so whether the services noticed is judged from their logs
        if cycle.producer_was_on_node:
            check(f"{label}: producer lost its connection and reconnected", cycle_producer_reconnects >= 1,
                  "no reconnect in the producer's log after the kill")
        if cycle.consumers_on_node:
            check(f"{label}: the consumers on the killed node reconnected and registered again",
                  sum(1 for n in cycle_reconnects if n) >= cycle.consumers_on_node,
                  f"{cycle.consumers_on_node} on the node, reconnects per consumer {cycle_reconnects}")

    # no 503 outside the failover windows
    stray = [at for at in unavailable_at
             if not any(c.killed_at - 1 <= at <= c.killed_at + MAX_FAILOVER_SECONDS for c in cycles)]
    check("no 503 outside a failover", not stray, f"{len(stray)} 503s, at {[round(at, 2) for at in stray[:5]]}")
    other = sorted({what for s in signups for _, what in s.answers if what.isdigit() and what not in ("202", "503")})
    check("no answer but 202 and 503", not other, f"{other}")

    table = {
        "signups": len(signups),
        "accepted (202)": len(accepted),
        "503 answers retried by the client": len(load.answers("503")),
        "requests without an HTTP answer, retried": len(transport),
        "delivered (mails)": len(mailed_ids),
        "dead-lettered (smtp_rejected)": len(dead_ids),
        "duplicate mails": duplicate_mails,
        "duplicate dead letters": duplicate_dead,
        "redeliveries skipped by dedup": int(suppressed),
        "retried through a delay tier": int(retried),
        "lost": len(lost),
        "producer failover s (max)": round(max((c["producer_failover"] for c in per_cycle), default=0.0), 2),
        "producer /readyz false s (max)": round(max((c["producer_not_ready"] for c in per_cycle), default=0.0), 2),
        "consumers ready again s (max)": round(max((c["consumers_ready_again"] for c in per_cycle), default=0.0), 2),
        "mails flow again s (max)": round(max((c["mails_flow_again"] for c in per_cycle), default=0.0), 2),
        "worst signup-to-mail wait s (max)": round(max((c["worst_wait"] for c in per_cycle), default=0.0), 2),
    }
    kinds: dict[str, int] = {}
    for _, what in transport:
        kinds[what] = kinds.get(what, 0) + 1
    return {"checks": checks, "table": table, "cycles": per_cycle, "reconnects": reconnects, "transport": kinds,
            "producer_reconnects": producer_reconnects, "counters": counters}


def render(plan: Plan, vhost: str, outcome: dict, cycles: list[KillCycle]) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    passed = all(ok for _, ok, _ in outcome["checks"])
    lines = [
        "# Clustered RabbitMQ: killing the leader of `email.welcome` under load",
        "",
        f"`tests/cluster/test_signup_failover.py`, {plan.name} version, {when}: **{'PASS' if passed else 'FAIL'}**.",
        f"{plan.rate:g} signups/s (open loop, Idempotency-Key per signup, 503 retried after Retry-After), "
        f"{plan.kills} kill(s) + restart, 1 producer-service and {CONSUMERS} email-service processes "
        f"(CONCURRENCY 8, dedup in Redis) through the haproxy front, vhost `{vhost}` on the 3-node cluster; "
        f"the SMTP server takes {SMTP_DELAY:g} s per mail and refuses every {plan.bounce_every}th recipient "
        "with 550. " + service_code(),
        "",
        "| outcome | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in outcome["table"].items()),
        "",
    ]
    cycles_out = outcome["cycles"]

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(c) for c in cycles_out) + " |"

    lines += [
        "| per kill (seconds from the kill) | " + " | ".join(f"kill {i + 1}" for i in range(len(cycles_out))) + " |",
        "|---|" + "---|" * len(cycles_out),
        row("killed node (leader of `email.welcome`)", lambda c: c["node"]),
        row("connections on it", lambda c: ("producer + " if c["producer_on_node"] else "")
            + f"{c['consumers_on_node']} consumer(s)"),
        row("new leader", lambda c: c["new_leader"]),
        row("producer: last 503 (number of 503s)", lambda c: f"{c['producer_failover']:.2f} ({c['unavailable']})"),
        row("producer: /readyz false", lambda c: f"{c['producer_not_ready']:.2f}"),
        row("consumers: /readyz false, each", lambda c: " / ".join(f"{d:.2f}" for d in c["consumer_not_ready"])),
        row("consumers: all ready again", lambda c: f"{c['consumers_ready_again']:.2f}"),
        row("longest pause between two mails (from)", lambda c: f"{c['mail_gap']:.2f} ({c['mail_gap_from']:+.2f})"),
        row("mails flow again (end of that pause)", lambda c: f"{c['mails_flow_again']:.2f}"),
        row("first mail of a signup sent after the kill", lambda c: f"{c['first_post_kill_mail']:.2f}"),
        row("worst signup-to-mail wait of signups sent until the restart",
            lambda c: f"{c['worst_wait']:.2f}"),
        row("restart, then rejoin of the queue", lambda c: f"{c['restart']:.1f} + {c['rejoin'] - c['restart']:.1f}"),
    ]
    lines += ["", "Queues after each kill (type, leader, online members):", ""]
    for index, c in enumerate(outcome["cycles"]):
        lines.append(f"- kill {index + 1}: " + "; ".join(
            f"`{name}` {'ok' if ok else 'NOT OK'} leader {leader}, {online} online"
            for name, ok, leader, online in c["queues"]))
    lines += ["", f"Reconnects (from the logs): producer {outcome['producer_reconnects']}, consumers "
              + ", ".join(str(n) for n in outcome["reconnects"]) + f". /readyz polled every {PROBE_INTERVAL:g} s "
              "(a reconnect quicker than that can fall between two polls).", "",
              "Requests without an HTTP answer (retried by the client): "
              + (", ".join(f"{what} ×{n}" for what, n in outcome["transport"].items()) or "none") + ".", "",
              "Timings: " + ", ".join(f"{name} {value:.1f} s" for name, value in outcome["timings"].items()), "",
              "Checks:", ""]
    lines += [f"- [{'x' if ok else ' '}] {name}" + ("" if ok else f": {detail}") for name, ok, detail in
              outcome["checks"]]
    kill_calls = ", ".join(f"{c['kill_call']:.2f}" for c in outcome["cycles"])
    lines += ["", f"Times are from the moment `cluster.sh kill` was called (it returned once the VM was gone, "
              f"after {kill_calls} s). "
              "Mail pauses and waits are measured between the kill and the restart; a signup's wait runs from its "
              "first POST to its mail, 503 retries (after Retry-After: 1 s) included.", ""]
    return "\n".join(lines)


def service_code() -> str:
    """Where the services' packages come from (a PYTHONPATH can put a patched copy in front of the repository's)."""
    repo = Path(__file__).resolve().parents[2]
    places = []
    for package in ("producer_service", "email_service"):
        origin = Path(importlib.util.find_spec(package).origin).resolve().parent
        places.append(f"{package} from the repository" if origin.is_relative_to(repo) else
                      f"**{package} from {origin}**, not the repository")
    return "Service code: " + ", ".join(places) + "."


def publish_summary(request: pytest.FixtureRequest, report: str) -> None:
    """Add the report to pytest's terminal summary (seen without -s too)."""
    class _Summary:
        def pytest_terminal_summary(self, terminalreporter) -> None:
            terminalreporter.section("clustered RabbitMQ failover (tests/cluster/LATEST.md)")
            terminalreporter.write_line(report)

    manager = request.config.pluginmanager
    name = "welcome-mail-failover-summary"
    if manager.get_plugin(name) is not None:
        manager.unregister(name=name)
    manager.register(_Summary(), name)
