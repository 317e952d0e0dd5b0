"""Fixtures of the reliability suite, the invariant every scenario ends with, and the outcome table.

The small version runs in `make test`; `RELIABILITY_FULL=1` (what `make test-reliability` sets) runs the full one:
more signups, more kills, every scenario with dedup off and on, and the RabbitMQ restart when the suite may restart
the broker (`RELIABILITY_OWNS_BROKER=1`). `RELIABILITY_SEED` changes the seed of every random choice.

At the end of the session the table of every scenario is printed and written to tests/reliability/LATEST.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.report import FULL, write_report

from .harness import ReliabilityRun, ScenarioConfig
from .outcome import Outcome, markdown_table

OWNS_BROKER = os.environ.get("RELIABILITY_OWNS_BROKER", "") == "1"
SEED = int(os.environ.get("RELIABILITY_SEED", "20261128"))
LATEST = Path(__file__).with_name("LATEST.md")

_rows: list[dict[str, str]] = []
_failed_checks: list[str] = []
_fuzz: list[str] = []


def record_fuzz(what: str, cases: int, problems: int) -> None:
    """One line per fuzz run for the summary and LATEST.md."""
    _fuzz.append(f"| {what} | {cases} | {'none' if not problems else f'{problems} (the test failed)'} |")


@pytest.fixture
def scenario(vhost, tmp_path: Path):
    """`async with scenario(ScenarioConfig(...)) as run:` a fresh set of processes on this test's vhost."""

    def make(config: ScenarioConfig) -> ReliabilityRun:
        return ReliabilityRun(config, vhost, tmp_path, SEED)

    return make


def check_invariant(outcome: Outcome, config: ScenarioConfig, workdir: Path) -> None:
    """Record the outcome row, then fail naming every broken promise."""
    _rows.append(outcome.row())
    problems = []
    if outcome.lost:
        problems.append(f"LOST: {len(outcome.lost)} signups got a 202 but ended as neither a mail nor a dead letter, "
                        f"e.g. {outcome.lost[:5]}")
    if outcome.unknown:
        problems.append(f"{len(outcome.unknown)} mails or dead letters for events no signup created: "
                        f"{outcome.unknown[:5]}")
    if outcome.wrong_statuses:
        problems.append("valid signups answered with something other than 202 or 503: "
                        + "; ".join(f"#{s.index} {s.statuses}" for s in outcome.wrong_statuses[:5]))
    if outcome.wrong_event_ids:
        problems.append("202 with an event id other than the one the Idempotency-Key determines: "
                        + "; ".join(f"#{s.index} {s.returned_event_id} != {s.event_id}"
                                    for s in outcome.wrong_event_ids[:5]))
    unexpected = {r: n for r, n in outcome.dead_letter_reasons.items() if r not in config.allowed_dead_letters}
    if unexpected:
        problems.append(f"dead letters this scenario gives no reason for: {unexpected} "
                        f"(expected only {sorted(config.allowed_dead_letters) or 'none'})")
    refused = {s.event_id for s in outcome.signups if s.refused and s.accepted}
    rejected = {e for e, reason in outcome.dead_letters if reason == "smtp_rejected"}
    if refused != rejected:
        problems.append(f"smtp_rejected dead letters do not match the refused recipients: {len(refused - rejected)} "
                        f"refused without one, {len(rejected - refused)} dead-lettered although accepted")
    if any(outcome.mails[e] for e in refused):
        problems.append("a mail was accepted for a recipient the SMTP server refuses")
    if config.dedup and outcome.unexplained_duplicates:
        problems.append(f"dedup on, yet {outcome.unexplained_duplicates} mails were sent again after a send that "
                        "was logged (and so recorded)")
    if outcome.duplicates > outcome.duplicate_bound:
        problems.append(
            f"{outcome.duplicates} duplicates, more than the {outcome.duplicate_bound} that "
            + ("sends cut off between the SMTP server's acceptance and the dedup record (SIGKILL, SMTP cut-off) "
               "explain" if config.dedup else "messages in flight at the disruptions explain"))
    if outcome.logs.tracebacks:
        problems.append(f"{outcome.logs.tracebacks} log lines with a traceback in the email-service logs")
    problems += outcome.notes
    if problems:
        summary = f"{config.name} (dedup {'on' if config.dedup else 'off'})"
        _failed_checks.append(summary)
        pytest.fail(f"{summary}:\n- " + "\n- ".join(problems) + "\n\n" + markdown_table([outcome.row()])
                    + f"\n\nprocess logs: {workdir}", pytrace=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    if not _rows and not _fuzz:
        return
    table = markdown_table(_rows) if _rows else "(no scenario ran)"
    if _fuzz:
        table += "\n\n| fuzz run | cases | problems |\n|---|---|---|\n" + "\n".join(_fuzz)
    terminalreporter.section(f"reliability outcomes ({'full' if FULL else 'small'} version, seed {SEED})")
    terminalreporter.write_line(table)
    if _failed_checks:
        terminalreporter.write_line(f"invariant broken in: {', '.join(_failed_checks)}")
    write_report(
        LATEST, "Reliability suite: latest outcome", f"{'Full' if FULL else 'Small'}",
        f"Seed {SEED}.\n\n{table}\n\n"
        "Columns: *202* signups accepted; *503* 503 answers (each retried by the client with the same "
        "Idempotency-Key); *no 202* signups that never got a 202 after every retry; *delivered* mails the SMTP "
        "server accepted (duplicates included); *duplicates* mails or dead letters beyond the first per event, with "
        "the bound the scenario allows (dedup off: the messages in flight at the disruptions; dedup on: the sends a "
        "SIGKILL or an SMTP cut-off can leave unrecorded between the SMTP server's 250 and the Redis write); *lost* "
        "202s that ended as neither mail nor dead letter; *without 202* events that reached the end although their "
        "signup never got a 202; *kills* SIGKILLs.\n"
        + (f"\nInvariant broken in: {', '.join(_failed_checks)}\n" if _failed_checks else ""))
