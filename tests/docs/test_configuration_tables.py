"""README.md's configuration tables name exactly the variables each service's config.py reads.

The variables are the upper-case string literals of config.py (every one is read through a helper that takes its
name); the README lists them in the first column of the table under "### <service>", one or more per row.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import markdown

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIG = {
    "producer-service": ROOT / "producer-service/src/producer_service/config.py",
    "email-service": ROOT / "email-service/src/email_service/config.py",
}


LOG_LEVEL_NAMES = {"DEBUG", "INFO", "WARNING", "ERROR"}  # upper-case literals that are values, not variables


def variables_read(config: Path) -> set[str]:
    return set(re.findall(r"\"([A-Z][A-Z0-9_]{3,})\"", config.read_text())) - LOG_LEVEL_NAMES


def variables_documented(service: str) -> set[str]:
    text = README.read_text()
    (heading,) = [h for h in markdown.headings(text) if h.level == 3 and h.text == service]
    names: set[str] = set()
    for line in text.splitlines()[heading.line:]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


@pytest.mark.parametrize("service", sorted(CONFIG))
def test_readme_documents_every_variable_the_service_reads(service: str) -> None:
    read, documented = variables_read(CONFIG[service]), variables_documented(service)
    assert read, f"no variables found in {CONFIG[service]}"
    assert documented == read, f"missing in README: {sorted(read - documented)}; not read: {sorted(documented - read)}"
