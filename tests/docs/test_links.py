"""Every relative link in README.md and docs/*.md points at a file that exists, and at a heading in it.

External links (https:, mailto:) are not fetched: the suite runs offline. An anchor is checked against the
target's GitHub anchors (tests/support/markdown.py) when the target is Markdown; a link to a directory or to a
non-Markdown file must not carry one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import markdown

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def broken_links(page: Path) -> list[str]:
    problems = []
    for link in markdown.links(page.read_text()):
        if link.is_external:
            continue
        target = (page.parent / link.path).resolve() if link.path else page
        where = f"{page.relative_to(ROOT)}:{link.line}: {link.target}"
        if not target.is_relative_to(ROOT):
            problems.append(f"{where}: outside the repository")
        elif not target.exists():
            problems.append(f"{where}: no such file")
        elif link.anchor is not None:
            if target.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif link.anchor not in markdown.anchors(target.read_text()):
                problems.append(f"{where}: no heading with anchor #{link.anchor}")
    return problems


def test_there_are_pages_and_links() -> None:
    assert (ROOT / "docs").is_dir() and len(PAGES) > 1
    assert sum(len(markdown.links(p.read_text())) for p in PAGES) > 20


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert not broken_links(page), "\n".join(broken_links(page))
