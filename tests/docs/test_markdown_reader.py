"""The Markdown reader the link and runbook checks rely on (tests/support/markdown.py), on small pages."""

from __future__ import annotations

import pytest

from tests.support import markdown


@pytest.mark.parametrize(("heading", "anchor"), [
    ("WelcomeMailDeadLettered", "welcomemaildeadlettered"),
    ("Dead letters: find, understand, replay, purge", "dead-letters-find-understand-replay-purge"),
    ("What was verified, and how (Kubernetes)", "what-was-verified-and-how-kubernetes"),
    ("A queue leader killed under load (clustered RabbitMQ)", "a-queue-leader-killed-under-load-clustered-rabbitmq"),
    ("1. Consumer: drain queued signups", "1-consumer-drain-queued-signups"),
    ("The `dlq` command", "the-dlq-command"),
    ("snake_case and — dashes", "snake_case-and--dashes"),
])
def test_anchor_is_githubs(heading: str, anchor: str) -> None:
    (found,) = markdown.headings(f"## {heading}\n")
    assert found.anchor == anchor


def test_repeated_headings_get_numbered_anchors_and_code_is_not_prose() -> None:
    page = ("# Runbook\n\n## Look\n\n```sh\n# not a heading [x](nowhere.md)\n```\n\n"
            "## Look\n\nsee `[y](no.md)` and [z](a.md#b)\n")
    assert [h.anchor for h in markdown.headings(page)] == ["runbook", "look", "look-1"]
    assert [link.target for link in markdown.links(page)] == ["a.md#b"]
    (link,) = markdown.links(page)
    assert (link.path, link.anchor, link.is_external) == ("a.md", "b", False)


def test_explicit_anchors_reference_links_and_sections() -> None:
    page = '<a id="top"></a>\n## Runbooks\n### A\n### B\n## Other\n### C\n\n[ref]: https://example.com/x\n'
    assert "top" in markdown.anchors(page)
    assert markdown.links(page)[0].is_external
    assert {name: [h.text for h in hs] for name, hs in markdown.sections(page, 2).items()} == {
        "Runbooks": ["A", "B"], "Other": ["C"]}
