"""Every alert links to its runbook, and every runbook belongs to an alert.

An alert's `runbook_url` is `<base>#<alertname in lower case>`: one base for all alerts (the chart replaces it
with prometheusRule.runbookBaseUrl, tests/helm/test_runbook_links.py), and an anchor that GitHub gives a
`### <AlertName>` heading under "## Runbooks" in docs/operations.md. A runbook section that is not an alert
must be listed in GENERAL_SECTIONS, so a renamed or deleted alert cannot leave a stale runbook behind.
"""

from __future__ import annotations

from tests.support import markdown
from tests.support.alert_rules import ROOT, runbook_urls

OPERATIONS = ROOT / "docs" / "operations.md"
RUNBOOKS = "Runbooks"
# Sections under "## Runbooks" that no alert links to on purpose.
GENERAL_SECTIONS: frozenset[str] = frozenset()


def runbook_sections() -> list[markdown.Heading]:
    sections = markdown.sections(OPERATIONS.read_text(), level=2)
    assert RUNBOOKS in sections, f"docs/operations.md has no '## {RUNBOOKS}' section"
    return sections[RUNBOOKS]


def test_every_alert_links_to_an_anchor_named_after_it() -> None:
    urls = runbook_urls()
    assert urls, "no alerts found"
    bases = {url.partition("#")[0] for url in urls.values()}
    assert len(bases) == 1, f"one runbook base for every alert, found {sorted(bases)}"
    (base,) = bases
    assert base.startswith("https://") and base.endswith("/docs/operations.md"), base
    wrong = {name: url for name, url in urls.items() if url != f"{base}#{name.lower()}"}
    assert not wrong, wrong


def test_every_alert_anchor_is_a_runbook_heading() -> None:
    anchors = {heading.anchor for heading in runbook_sections()}
    missing = {name: url for name, url in runbook_urls().items() if url.partition("#")[2] not in anchors}
    assert not missing, f"runbook_url anchors without a '### <AlertName>' heading under '## {RUNBOOKS}': {missing}"


def test_every_runbook_section_belongs_to_an_alert_or_is_general() -> None:
    alerts = set(runbook_urls())
    orphans = [h.text for h in runbook_sections() if h.text not in alerts | GENERAL_SECTIONS]
    assert not orphans, f"runbook sections no alert links to (add to GENERAL_SECTIONS if meant): {orphans}"
    assert GENERAL_SECTIONS <= {h.text for h in runbook_sections()}, "GENERAL_SECTIONS names a missing section"
