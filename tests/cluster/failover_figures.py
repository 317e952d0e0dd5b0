"""The figures of one kill, in seconds from the kill: how long the producer answered 503 and said "not ready", when
every consumer was ready again, the longest pause in the mail stream and what the signups sent meanwhile waited.

A cycle's window runs from one second before its kill (a 503 can come just before `cluster.sh kill` returns) to
where the next cycle's window begins (one second before the next kill): windows never overlap, so an answer or a
/readyz sample counts for one kill only. Mail pauses and waits are measured between the kill and the restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.support.smtp_server import first_accepted, longest_gap

from .kill_cycle import KillCycle

WINDOW_LEAD = 1.0  # seconds before a kill that already count for it

if TYPE_CHECKING:
    from .failover_outcome import Evidence


@dataclass(frozen=True)
class QueueHealth:
    """One queue after a kill: still quorum, a leader on a surviving node, a majority of members online."""

    name: str
    ok: bool
    leader: str | None
    online: int

    @classmethod
    def of(cls, name: str, row: dict[str, Any], killed: str) -> QueueHealth:
        online = row.get("online") or []
        ok = (row.get("type") == "quorum" and row.get("leader") not in (None, "", killed)
              and killed not in online and len(online) >= 2)
        return cls(name, ok, row.get("leader"), len(online))


@dataclass(frozen=True)
class CycleFigures:
    node: str
    new_leader: str
    producer_on_node: bool
    consumers_on_node: int
    producer_failover: float        # the last 503 of the window
    unavailable: int                # 503s in the window
    producer_not_ready: float
    consumer_not_ready: list[float]
    consumers_ready_again: float    # the end of the last consumer /readyz outage
    mail_gap: float
    mail_gap_from: float
    mails_flow_again: float         # the end of that pause
    first_post_kill_mail: float     # of a signup first sent after the node was gone
    worst_wait: float               # signup-to-mail, of the signups sent until the restart
    recovered: float
    restart: float
    rejoin: float
    kill_call: float
    queues: list[QueueHealth]
    producer_reconnects: int
    consumer_reconnects: list[int]


def cycle_figures(cycle: KillCycle, following: KillCycle | None, evidence: Evidence) -> CycleFigures:
    killed = cycle.killed_at
    since, until = killed - WINDOW_LEAD, following.killed_at - WINDOW_LEAD if following else math.inf
    wall_until = following.killed_wall if following else math.inf
    load = evidence.load

    mine = [at for at in load.answered_at("503") if since <= at < until]
    consumers_back = max((end for p in evidence.consumer_probes for _, end in p.down_intervals(since, until)),
                         default=killed) - killed
    gap = longest_gap((mail.at for mail in evidence.mails), killed, cycle.quiet_end)
    first_mail = first_accepted(evidence.mails)
    sent_then = [s for s in load.accepted() if not s.refused and s.first_sent is not None
                 and killed <= s.first_sent <= cycle.quiet_end and s.event_id in first_mail]
    worst_wait = max((first_mail[s.event_id] - (s.first_sent or 0.0) for s in sent_then), default=math.nan)
    first_post_kill = min((first_mail[s.event_id] for s in sent_then if (s.first_sent or 0.0) > cycle.gone_at),
                          default=math.nan)
    return CycleFigures(
        node=cycle.node, new_leader=cycle.new_leader, producer_on_node=cycle.producer_was_on_node,
        consumers_on_node=cycle.consumers_on_node,
        producer_failover=(max(mine) - killed) if mine else 0.0, unavailable=len(mine),
        producer_not_ready=evidence.producer_probe.down_seconds(since, until),
        consumer_not_ready=[p.down_seconds(since, until) for p in evidence.consumer_probes],
        consumers_ready_again=consumers_back,
        mail_gap=gap[1] - gap[0], mail_gap_from=gap[0] - killed, mails_flow_again=max(0.0, gap[1] - killed),
        first_post_kill_mail=first_post_kill - killed, worst_wait=worst_wait,
        recovered=(cycle.recovered_at or math.nan) - killed,
        restart=cycle.restart_seconds, rejoin=cycle.rejoin_seconds, kill_call=cycle.kill_call_seconds,
        queues=[QueueHealth.of(name, row, cycle.node) for name, row in cycle.queues_after_kill.items()],
        producer_reconnects=evidence.producer_reconnects(cycle.killed_wall, wall_until),
        consumer_reconnects=evidence.consumer_reconnects(cycle.killed_wall, wall_until),
    )
