"""The end of a scenario in numbers, and the invariant: every 202 the producer gave ends as exactly one mail the SMTP
server accepted or one dead letter with a reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.support.load import Signup
from tests.support.service_logs import ServiceLogs


@dataclass
class Outcome:
    scenario: str
    dedup: bool
    signups: list[Signup]
    mails: Counter[str]  # event id -> mails the SMTP server accepted
    dead_letters: list[tuple[str | None, str]]  # (event id, reason) for every message in the DLQ
    disruptions: Counter[str]  # what the chaos did: kills, sigterms, connection closes, SMTP stops, ...
    duplicate_bound: int  # dedup off: messages that could be handled twice; on: sends that could go unrecorded
    logs: ServiceLogs
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # "<who> detected"/"<who> recovered": seconds
    figures: dict[str, str] = field(default_factory=dict)  # what else a scenario measured, e.g. throughput

    def __post_init__(self) -> None:
        self.by_event: Counter[str] = Counter(self.mails)
        for event_id, _ in self.dead_letters:
            self.by_event[event_id] += 1
        self.known = {s.event_id: s for s in self.signups}
        self.accepted_ids = {s.event_id for s in self.signups if s.accepted}

    # -- the counts of the table
    @property
    def accepted(self) -> int:
        return len(self.accepted_ids)

    @property
    def responses_503(self) -> int:
        return sum(s.statuses.count(503) for s in self.signups)

    @property
    def not_accepted(self) -> int:
        return len(self.signups) - self.accepted

    @property
    def delivered(self) -> int:
        return sum(self.mails.values())

    @property
    def dead_letter_reasons(self) -> Counter[str]:
        return Counter(reason for _, reason in self.dead_letters)

    @property
    def duplicates(self) -> int:
        """Mails or dead letters beyond the first for one event."""
        return sum(n - 1 for n in self.by_event.values() if n > 1)

    @property
    def unexplained_duplicates(self) -> int:
        """Dedup on: mails sent again although the first send was logged as sent (and so recorded).

        A mail sent again after its first send was accepted by the SMTP server but never recorded (the process was
        SIGKILLed in between, or the server was cut off before its 250 arrived) is the window dedup cannot close;
        there the first send has no "mail sent" line. Any other second mail means the dedup check let it through."""
        return sum(max(0, min(n, self.logs.sent[e]) - 1) for e, n in self.mails.items() if n > 1)

    @property
    def lost(self) -> list[str]:
        return sorted(e for e in self.accepted_ids if self.by_event[e] == 0)

    @property
    def unknown(self) -> list[str]:
        """Mails or dead letters for events no signup of this run could have created."""
        return sorted(str(e) for e in self.by_event if e not in self.known)

    @property
    def delivered_without_202(self) -> list[Signup]:
        """Events that reached the end although their signup never got a 202 (its publish was stored, but the
        confirm or the response was lost)."""
        return [self.known[e] for e in self.by_event if e in self.known and e not in self.accepted_ids]

    @property
    def wrong_statuses(self) -> list[Signup]:
        return [s for s in self.signups if any(code not in (202, 503) for code in s.statuses)]

    @property
    def wrong_event_ids(self) -> list[Signup]:
        return [s for s in self.signups if s.accepted and s.returned_event_id != s.event_id]

    def row(self) -> dict[str, str]:
        reasons = self.dead_letter_reasons
        without_202 = self.delivered_without_202
        lost_response = sum(1 for s in without_202 if s.response_lost)
        kills = self.disruptions.get("sigkill", 0)
        return {
            "scenario": self.scenario,
            "dedup": "on" if self.dedup else "off",
            "signups": str(len(self.signups)),
            "202": str(self.accepted),
            "503": str(self.responses_503),
            "no 202": str(self.not_accepted),
            "delivered": str(self.delivered),
            "dead letters": ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())) or "0",
            "duplicates": self._duplicates_cell(),
            "lost": str(len(self.lost)),
            "without 202": f"{len(without_202)} ({lost_response} response lost)" if without_202 else "0",
            "kills": str(kills),
            "disruptions": ", ".join(f"{k} {v}" for k, v in sorted(self.disruptions.items()) if k != "sigkill") or "-",
            "detected / recovered s": self._timings_cell(),
            "figures": ", ".join(f"{k} {v}" for k, v in self.figures.items()) or "-",
            "seconds": f"{self.seconds:.0f}",
        }


    def _timings_cell(self) -> str:
        """"producer 5.2 / 2.5, ...": seconds from the fault to "not ready", and from the heal to "ready" again."""
        cells = []
        for who in sorted({key.rsplit(" ", 1)[0] for key in self.timings}):
            detected, recovered = (self.timings.get(f"{who} {what}") for what in ("detected", "recovered"))
            cells.append(" / ".join("?" if t is None else f"{t:.1f}" for t in (detected, recovered)))
            cells[-1] = f"{who} {cells[-1]}"
        return ", ".join(cells) or "-"

    def _duplicates_cell(self) -> str:
        return f"{self.duplicates} (≤ {self.duplicate_bound})"


COLUMNS = ["scenario", "dedup", "signups", "202", "503", "no 202", "delivered", "dead letters", "duplicates", "lost",
           "without 202", "kills", "disruptions", "detected / recovered s", "figures",
           "seconds"]


def markdown_table(rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(row.get(c, "") for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)
