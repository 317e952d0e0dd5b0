"""The invariant every reliability scenario ends with, and the session's record of every outcome.

The invariant: every 202 the producer gave ends as exactly one mail the SMTP server accepted or one dead letter with
a reason; nothing lost; duplicates only within the bound the scenario's disruptions explain (none that dedup should
have caught). `check_invariant` records the scenario's row before it judges, so the session's table (printed and
written to LATEST.md by conftest) shows failed scenarios too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import ScenarioConfig
from .outcome import Outcome, markdown_table

rows: list[dict[str, str]] = []
failed_checks: list[str] = []
fuzz_lines: list[str] = []


def record_fuzz(what: str, cases: int, problems: int) -> None:
    """One line per fuzz run for the summary and LATEST.md."""
    fuzz_lines.append(f"| {what} | {cases} | {'none' if not problems else f'{problems} (the test failed)'} |")


def check_invariant(outcome: Outcome, config: ScenarioConfig, workdir: Path) -> None:
    """Record the outcome row, then fail naming every broken promise."""
    rows.append(outcome.row())
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
        failed_checks.append(summary)
        pytest.fail(f"{summary}:\n- " + "\n- ".join(problems) + "\n\n" + markdown_table([outcome.row()])
                    + f"\n\nprocess logs: {workdir}", pytrace=False)
