"""The failover scenario's report: the outcome table, the figures per kill, the queues after each kill, the
checks; written to tests/cluster/LATEST.md (full runs; the short one to the temp folder) and shown in pytest's
terminal summary. A scenario that never recovered from a kill writes a short FAIL report with the diagnosis.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.report import show_in_summary, write_report

from .pipeline import CONSUMERS, PROBE_INTERVAL, SMTP_DELAY

if TYPE_CHECKING:
    from .failover_figures import CycleFigures
    from .failover_outcome import FailoverOutcome
    from .kill_cycle import Plan

LATEST = Path(__file__).with_name("LATEST.md")
TITLE = "Clustered RabbitMQ: killing the leader of `email.welcome` under load"
SUMMARY_SECTION = "clustered RabbitMQ failover (tests/cluster/LATEST.md)"


def render(plan: Plan, vhost: str, outcome: FailoverOutcome) -> str:
    cycles = outcome.cycles
    lines = [
        f"`tests/cluster/test_signup_failover.py`: **{'PASS' if outcome.passed else 'FAIL'}**. "
        f"{plan.rate:g} signups/s (open loop, Idempotency-Key per signup, 503 retried after Retry-After), "
        f"{plan.kills} kill(s) + restart, 1 producer-service and {CONSUMERS} email-service processes "
        f"(CONCURRENCY 8, dedup in Redis) through the haproxy front, vhost `{vhost}` on the 3-node cluster; "
        f"the SMTP server takes {SMTP_DELAY:g} s per mail and refuses every {plan.bounce_every}th recipient "
        "with 550.",
        "",
        "| outcome | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in outcome.table.items()),
        "",
    ]

    def row(label: str, cell: Callable[[CycleFigures], str]) -> str:
        return f"| {label} | " + " | ".join(cell(c) for c in cycles) + " |"

    lines += [
        "| per kill (seconds from the kill) | " + " | ".join(f"kill {i + 1}" for i in range(len(cycles))) + " |",
        "|---|" + "---|" * len(cycles),
        row("killed node (leader of `email.welcome`)", lambda c: c.node),
        row("connections on it", lambda c: ("producer + " if c.producer_on_node else "")
            + f"{c.consumers_on_node} consumer(s)"),
        row("new leader", lambda c: c.new_leader),
        row("producer: last 503 (number of 503s)", lambda c: f"{c.producer_failover:.2f} ({c.unavailable})"),
        row("producer: /readyz false", lambda c: f"{c.producer_not_ready:.2f}"),
        row("consumers: /readyz false, each", lambda c: " / ".join(f"{d:.2f}" for d in c.consumer_not_ready)),
        row("consumers: all ready again", lambda c: f"{c.consumers_ready_again:.2f}"),
        row("longest pause between two mails (from)", lambda c: f"{c.mail_gap:.2f} ({c.mail_gap_from:+.2f})"),
        row("mails flow again (end of that pause)", lambda c: f"{c.mails_flow_again:.2f}"),
        row("first mail of a signup sent after the kill", lambda c: f"{c.first_post_kill_mail:.2f}"),
        row("worst signup-to-mail wait of signups sent until the restart", lambda c: f"{c.worst_wait:.2f}"),
        row("restart, then rejoin of the queue", lambda c: f"{c.restart:.1f} + {c.rejoin - c.restart:.1f}"),
        "", "Queues after each kill (type, leader, online members):", "",
    ]
    lines += [f"- kill {index + 1}: " + "; ".join(
        f"`{q.name}` {'ok' if q.ok else 'NOT OK'} leader {q.leader}, {q.online} online" for q in c.queues)
        for index, c in enumerate(cycles)]
    transport = ", ".join(f"{what} ×{n}" for what, n in outcome.transport.items()) or "none"
    lines += [
        "", f"Reconnects (from the logs): producer {outcome.producer_reconnects}, consumers "
        + ", ".join(str(n) for n in outcome.reconnects) + f". /readyz polled every {PROBE_INTERVAL:g} s "
        "(a reconnect quicker than that can fall between two polls).", "",
        f"Requests without an HTTP answer (retried by the client): {transport}.", "",
        "Timings: " + ", ".join(f"{name} {value:.1f} s" for name, value in outcome.timings.items()), "",
        "Checks:", "",
        *(f"- [{'x' if c.ok else ' '}] {c.name}" + ("" if c.ok else f": {c.detail}") for c in outcome.checks),
        "", "Times are from the moment `cluster.sh kill` was called (it returned once the VM was gone, after "
        + ", ".join(f"{c.kill_call:.2f}" for c in cycles) + " s). "
        "Mail pauses and waits are measured between the kill and the restart; a signup's wait runs from its "
        "first POST to its mail, 503 retries (after Retry-After: 1 s, with the client's jitter) included.",
    ]
    return "\n".join(lines)


def publish(request: pytest.FixtureRequest, plan: Plan, vhost: str, outcome: FailoverOutcome) -> str:
    """Write, print and summarise the report; the outcome table also goes to the test's user properties."""
    report = render(plan, vhost, outcome)
    path = write_report(LATEST, TITLE, plan.name, report)
    text = path.read_text(encoding="utf-8")
    print("\n" + text)
    show_in_summary(request.config, SUMMARY_SECTION, text)
    request.node.user_properties.extend(outcome.table.items())
    return text


def write_failure_report(version: str, failure: str, diagnosis: str) -> None:
    """The report of a scenario that stopped at a kill it did not recover from."""
    write_report(LATEST, TITLE, version, f"**FAIL**, {failure}.\n\n{diagnosis}")
    print("\n" + diagnosis)
