"""Fixtures of the reliability suite, and the outcome table at the end of the session (tests/reliability/invariant.py
holds the invariant and the record it keeps).

The small version runs in `make test`; `RELIABILITY_FULL=1` (what `make test-reliability` sets) runs the full one:
more signups, more kills, longer blackouts, every scenario with dedup off and on. The RabbitMQ restart runs in both, on
a private node (`private_broker`): the shared broker is never restarted; the partition (test_partition.py) on
three nodes of the session's own in network namespaces (`partitioned_cluster`). The other network faults
(test_network_faults.py) go through tests/support/fault_proxy.py. `RELIABILITY_SEED` changes the seed of every
random choice.

At the end of the session the table of every scenario is printed and written to tests/reliability/LATEST.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import VHost
from tests.support.partition import PartitionedCluster
from tests.support.private_broker import PrivateBroker
from tests.support.report import FULL, write_report

from .harness import SEED, ReliabilityRun, ScenarioConfig
from .invariant import failed_checks, fuzz_lines, rows
from .outcome import markdown_table

LATEST = Path(__file__).with_name("LATEST.md")


@pytest.fixture
def scenario(request: pytest.FixtureRequest, tmp_path: Path):
    """`async with scenario(ScenarioConfig(...)) as run:` a fresh set of processes on this test's vhost of the shared
    broker, or on the vhost given (`scenario(config, private_vhost)`)."""

    def make(config: ScenarioConfig, vhost: VHost | None = None) -> ReliabilityRun:
        return ReliabilityRun(config, vhost or request.getfixturevalue("vhost"), tmp_path, SEED)

    return make


@pytest.fixture(scope="session")
def private_broker() -> Iterator[PrivateBroker]:
    """A RabbitMQ node of the session's own, for the scenarios that stop it; removed at the end."""
    broker = PrivateBroker.start("wm-reliability")
    try:
        yield broker
    finally:
        broker.remove()


@pytest.fixture
def private_vhost(private_broker: PrivateBroker) -> Iterator[VHost]:
    vhost = private_broker.vhost()
    yield vhost
    vhost.delete()


@pytest.fixture(scope="session")
def partitioned_cluster() -> Iterator[PartitionedCluster]:
    """Three RabbitMQ nodes of the session's own, each in a network namespace (test_partition.py cuts one off)."""
    cluster = PartitionedCluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def partition_vhost(partitioned_cluster: PartitionedCluster) -> Iterator[VHost]:
    vhost = partitioned_cluster.vhost()
    yield vhost
    vhost.delete()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    if not rows and not fuzz_lines:
        return
    table = markdown_table(rows) if rows else "(no scenario ran)"
    if fuzz_lines:
        table += "\n\n| fuzz run | cases | problems |\n|---|---|---|\n" + "\n".join(fuzz_lines)
    terminalreporter.section(f"reliability outcomes ({'full' if FULL else 'small'} version, seed {SEED})")
    terminalreporter.write_line(table)
    if failed_checks:
        terminalreporter.write_line(f"invariant broken in: {', '.join(failed_checks)}")
    write_report(
        LATEST, "Reliability suite: latest outcome", f"{'Full' if FULL else 'Small'}",
        f"Seed {SEED}.\n\n{table}\n\n"
        "Columns: *202* signups accepted; *503* 503 answers (each retried by the client with the same "
        "Idempotency-Key); *no 202* signups that never got a 202 after every retry; *delivered* mails the SMTP "
        "server accepted (duplicates included); *duplicates* mails or dead letters beyond the first per event, with "
        "the bound the scenario allows (dedup off: the messages in flight at the disruptions; dedup on: the sends a "
        "SIGKILL or an SMTP cut-off can leave unrecorded between the SMTP server's 250 and the Redis write); *lost* "
        "202s that ended as neither mail nor dead letter; *without 202* events that reached the end although their "
        "signup never got a 202; *kills* SIGKILLs; *detected / recovered s* seconds from a network fault to the "
        "service's /readyz saying 503, and from the heal to 200 again; *figures* what else a scenario measured.\n"
        + (f"\nInvariant broken in: {', '.join(failed_checks)}\n" if failed_checks else ""))
