"""What the failover scenario ended with, judged: the evidence gathered after the drain, every check, and the
figures per kill that the report shows.

The invariant judged first: every signup gets a 202, every 202 ends as exactly one mail or as one dead letter
with a reason (bounces: smtp_rejected), nothing else is mailed or dead-lettered. Then the failover promises: 503s
only around a kill, the consumers ready again, the queues keep a leader and a majority, the retry tiers used.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from email_service.topology import DEAD_LETTER_QUEUE
from email_service.wire import UNKNOWN_REASON, DeadLetterReason
from tests.support.amqp import DeadLetter, read_dead_letters
from tests.support.load import SignupLoad
from tests.support.probes import ReadinessProbe
from tests.support.service_logs import times_of
from tests.support.smtp_server import ReceivedMail

from .failover_figures import CycleFigures, cycle_figures
from .kill_cycle import DEFERRALS_PER_KILL, KillCycle
from .pipeline import CONSUMERS, Pipeline

MAX_FAILOVER_SECONDS = 30       # producer 503s / consumer not ready after a kill, at most
PRODUCER_RECONNECT = "broker connection lost, reconnecting"
CONSUMER_RECONNECT = "broker connection or channel lost, reconnecting"


@dataclass
class Evidence:
    """Everything the evaluation reads, gathered once the pipeline has drained."""

    load: SignupLoad
    mails: list[ReceivedMail]
    smtp_deferred: int
    dead_letters: list[DeadLetter]
    counters: list[dict[str, float]]  # email_messages_total by outcome, per consumer
    producer_probe: ReadinessProbe
    consumer_probes: list[ReadinessProbe]
    producer_alive: bool
    final_ready: dict[str, bool]
    producer_logs: list[Path]
    consumer_logs: list[list[Path]]

    @classmethod
    async def gather(cls, pipeline: Pipeline, load: SignupLoad) -> Evidence:
        counters = await pipeline.counters()
        dead_letters = await read_dead_letters(pipeline.vhost.url, DEAD_LETTER_QUEUE)
        assert pipeline.probes is not None
        await pipeline.probes.stop()
        return cls(load, pipeline.smtp.received(), pipeline.smtp.deferred, dead_letters, counters,
                   pipeline.producer_probe, pipeline.consumer_probes, pipeline.producer.alive,
                   {p.name: p.ready for p in pipeline.probes.probes}, pipeline.producer_log(),
                   [pipeline.consumer_log(slot) for slot in range(CONSUMERS)])

    def producer_reconnects(self, since: float = 0.0, until: float = math.inf) -> int:
        return len(times_of(self.producer_logs, PRODUCER_RECONNECT, since, until))

    def consumer_reconnects(self, since: float = 0.0, until: float = math.inf) -> list[int]:
        return [len(times_of(logs, CONSUMER_RECONNECT, since, until)) for logs in self.consumer_logs]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class FailoverOutcome:
    checks: list[Check]
    table: dict[str, int | float]
    cycles: list[CycleFigures]
    reconnects: list[int]
    producer_reconnects: int
    transport: Counter[str]  # requests without an HTTP answer, by error name
    timings: dict[str, float]

    @property
    def passed(self) -> bool:
        return all(check.ok for check in self.checks)

    def failures(self) -> str:
        return "\n  ".join(f"{c.name}: {c.detail}" for c in self.checks if not c.ok)


def evaluate(evidence: Evidence, cycles: list[KillCycle], timings: dict[str, float]) -> FailoverOutcome:
    load = evidence.load
    checks: list[Check] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append(Check(name, bool(ok), detail))

    accepted = load.accepted()
    accepted_ids = {s.event_id for s in accepted}
    mail_count = Counter(mail.event_id or "" for mail in evidence.mails)
    dead: dict[str, list[str]] = {}
    for letter in evidence.dead_letters:
        dead.setdefault(str(letter.message_id), []).append(letter.reason)
    mailed_ids, dead_ids = set(mail_count), set(dead)
    lost = [s for s in accepted if s.event_id not in mailed_ids and s.event_id not in dead_ids]
    duplicate_mails = sum(n - 1 for n in mail_count.values())
    both = sorted(mailed_ids & dead_ids)
    strangers = sorted((mailed_ids | dead_ids) - accepted_ids)
    wrong_way = [s.index for s in accepted if (s.event_id in dead_ids) != s.refused]
    reasons = {r for rs in dead.values() for r in rs}
    retried = sum(c.get("retried", 0.0) for c in evidence.counters)

    check("every signup accepted (202) within the client's retries", len(accepted) == len(load.signups),
          f"{len(load.signups) - len(accepted)} of {len(load.signups)} never got a 202")
    check("nothing lost", not lost, f"{len(lost)} accepted signups neither mailed nor dead-lettered: "
          f"{[s.index for s in lost[:10]]}")
    check("no duplicate mail (dedup on)", duplicate_mails == 0, f"{duplicate_mails} duplicate mails")
    check("no event both mailed and dead-lettered", not both, f"{both[:5]}")
    check("mails and dead letters only for accepted signups", not strangers, f"{strangers[:5]}")
    check("bounces dead-lettered, the rest mailed", not wrong_way, f"signups {wrong_way[:10]}")
    check("every dead letter has a reason", UNKNOWN_REASON not in reasons,
          f"{[e for e, rs in dead.items() if UNKNOWN_REASON in rs][:5]}")
    check("dead letters are smtp_rejected", reasons <= {DeadLetterReason.SMTP_REJECTED}, f"{sorted(reasons)}")
    check("producer kept running (no restart)", evidence.producer_alive,
          "producer-service process exited or was replaced")
    check("all /readyz true at the end", all(evidence.final_ready.values()), f"{evidence.final_ready}")
    check("retry tier used after each kill", retried >= DEFERRALS_PER_KILL * len(cycles),
          f"retried={retried:g}, deferred by SMTP={evidence.smtp_deferred}")

    figures = [cycle_figures(cycle, cycles[i + 1] if i + 1 < len(cycles) else None, evidence)
               for i, cycle in enumerate(cycles)]
    for index, (cycle, fig) in enumerate(zip(cycles, figures, strict=True)):
        label = f"kill {index + 1} ({cycle.node})"
        check(f"{label}: new leader on a surviving node", cycle.new_leader not in ("", cycle.node), cycle.new_leader)
        check(f"{label}: retry tiers and DLQ quorum with a leader and a majority online",
              all(q.ok for q in fig.queues), f"{cycle.queues_after_kill}")
        check(f"{label}: producer 503s only within {MAX_FAILOVER_SECONDS}s of the kill",
              fig.producer_failover <= MAX_FAILOVER_SECONDS, f"{fig.producer_failover:.1f}s")
        check(f"{label}: consumers ready again within {MAX_FAILOVER_SECONDS}s",
              fig.consumers_ready_again <= MAX_FAILOVER_SECONDS, f"{fig.consumers_ready_again:.1f}s")
        # /readyz is polled every PROBE_INTERVAL; a reconnect faster than that (the producer's takes ~20 ms) can
        # fall between two polls, so whether the services noticed is judged from their logs
        if cycle.producer_was_on_node:
            check(f"{label}: producer lost its connection and reconnected", fig.producer_reconnects >= 1,
                  "no reconnect in the producer's log after the kill")
        if cycle.consumers_on_node:
            check(f"{label}: the consumers on the killed node reconnected and registered again",
                  sum(1 for n in fig.consumer_reconnects if n) >= cycle.consumers_on_node,
                  f"{cycle.consumers_on_node} on the node, reconnects per consumer {fig.consumer_reconnects}")

    unavailable_at = load.answered_at("503")
    stray = [at for at in unavailable_at
             if not any(c.killed_at - 1 <= at <= c.killed_at + MAX_FAILOVER_SECONDS for c in cycles)]
    check("no 503 outside a failover", not stray, f"{len(stray)} 503s, at {[round(at, 2) for at in stray[:5]]}")
    other = sorted({what for s in load.signups for _, what in s.answers
                    if what.isdigit() and what not in ("202", "503")})
    check("no answer but 202 and 503", not other, f"{other}")

    transport = load.transport_errors()

    def worst(figure: str) -> float:
        return round(max((getattr(fig, figure) for fig in figures), default=0.0), 2)

    table: dict[str, int | float] = {
        "signups": len(load.signups),
        "accepted (202)": len(accepted),
        "503 answers retried by the client": len(unavailable_at),
        "requests without an HTTP answer, retried": len(transport),
        "delivered (mails)": len(mailed_ids),
        "dead-lettered (smtp_rejected)": len(dead_ids),
        "duplicate mails": duplicate_mails,
        "duplicate dead letters": sum(len(rs) - 1 for rs in dead.values()),
        "redeliveries skipped by dedup": int(sum(c.get("duplicate", 0.0) for c in evidence.counters)),
        "retried through a delay tier": int(retried),
        "lost": len(lost),
        "producer failover s (max)": worst("producer_failover"),
        "producer /readyz false s (max)": worst("producer_not_ready"),
        "consumers ready again s (max)": worst("consumers_ready_again"),
        "mails flow again s (max)": worst("mails_flow_again"),
        "worst signup-to-mail wait s (max)": worst("worst_wait"),
    }
    return FailoverOutcome(checks, table, figures, evidence.consumer_reconnects(), evidence.producer_reconnects(),
                           Counter(what for _, what in transport), timings)
