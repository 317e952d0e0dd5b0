"""The outcome reports of the reliability and cluster suites: where they are written, what heads them, and the
section in pytest's terminal summary.

Invariant: a test run leaves the tree clean. A suite's committed report (e.g. tests/reliability/LATEST.md) is
rewritten only by full runs (`RELIABILITY_FULL=1`, what `make test-reliability` sets) or when asked
(`RECORD_LATEST=1`); the short versions inside `make test` write the same report to the temp folder.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FULL = os.environ.get("RELIABILITY_FULL", "") == "1"


def report_path(committed: Path) -> Path:
    """`committed` itself in a full or recording run, else a file of the same name in the temp folder."""
    if FULL or os.environ.get("RECORD_LATEST") == "1":
        return committed
    return Path(tempfile.gettempdir()) / f"welcome-mail-{committed.parent.name}-{committed.name}"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                              timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def services_source() -> str:
    """Where the services' code was loaded from; loud when it is not this repository (a PYTHONPATH can put a
    patched copy in front)."""
    places = []
    for package in ("producer_service", "email_service"):
        spec = importlib.util.find_spec(package)
        origin = Path(spec.origin).resolve().parent if spec and spec.origin else None
        places.append(f"{package} from the repository" if origin and origin.is_relative_to(REPO)
                      else f"**{package} from {origin}**, not the repository")
    return "Service code: " + ", ".join(places) + "."


def provenance(version: str) -> str:
    """The line under a report's title: which version of the suite, which commit, when, on how many cores."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{version} version, commit {git_commit()} (plus the working tree), {when}, {os.cpu_count()} cores. "
            + services_source())


def write_report(committed: Path, title: str, version: str, body: str) -> Path:
    """Write `# title`, the provenance line and `body` to the report's path; returns the path."""
    path = report_path(committed)
    path.write_text(f"# {title}\n\n{provenance(version)}\n\n{body.rstrip()}\n", encoding="utf-8")
    return path


def show_in_summary(config: pytest.Config, section: str, text: str) -> None:
    """Print `text` under `section` in pytest's terminal summary (seen without -s too); the latest call wins."""

    class _Summary:
        def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
            terminalreporter.section(section)
            terminalreporter.write_line(text)

    name = f"welcome-mail-summary-{section}"
    manager = config.pluginmanager
    if manager.get_plugin(name) is not None:
        manager.unregister(name=name)
    manager.register(_Summary(), name)
