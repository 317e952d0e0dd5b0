"""Reading Markdown the way GitHub renders it: headings, their anchors, and the links of a page.

Invariant: code is not prose. Fenced blocks (``` or ~~~) and inline code spans are skipped, so a shell
comment (`# ...`) is never a heading and `[x](y)` inside backticks is never a link. Anchors follow GitHub's
rule (github-slugger): the heading's text in lower case, punctuation dropped, each space a hyphen, and the
second and later headings of the same text suffixed -1, -2, ...; `<a id="...">`/`<a name="...">` add more.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\".*\")?\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


@dataclass(frozen=True)
class Heading:
    level: int
    text: str  # as rendered: code-span backticks, emphasis markers and link targets removed
    anchor: str
    line: int  # 1-based


@dataclass(frozen=True)
class Link:
    target: str  # as written, e.g. "docs/operations.md#dead-letters" or "#metrics"
    line: int

    @property
    def is_external(self) -> bool:
        return bool(_EXTERNAL.match(self.target))

    @property
    def path(self) -> str:
        """The file part of a relative target ("" for a link within the same page)."""
        return self.target.split("#", 1)[0]

    @property
    def anchor(self) -> str | None:
        return self.target.split("#", 1)[1] if "#" in self.target else None


def _prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            yield number, line


def _rendered_text(markdown: str) -> str:
    text = _CODE_SPAN.sub(lambda m: m.group(2).strip(), markdown)
    text = _INLINE_LINK.sub(lambda m: m.group(1), text)
    return re.sub(r"(\*\*|\*|__)(.+?)\1", r"\2", text)


def slug(text: str) -> str:
    """GitHub's anchor for a heading of this rendered text (before any -1, -2 suffix)."""
    kept = "".join(
        ch for ch in text.lower()
        if ch in " -_" or ch.isalnum() or unicodedata.category(ch)[0] == "M"
    )
    return kept.replace(" ", "-")


def headings(text: str) -> list[Heading]:
    found: list[Heading] = []
    seen: dict[str, int] = {}
    for number, line in _prose_lines(text):
        match = _HEADING.match(line)
        if not match:
            continue
        rendered = _rendered_text(match.group(2))
        base = slug(rendered)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.append(Heading(len(match.group(1)), rendered, base if count == 0 else f"{base}-{count}", number))
    return found


def anchors(text: str) -> set[str]:
    """Every fragment a link to this page may name."""
    explicit = {m.group(1) for _, line in _prose_lines(text) for m in _HTML_ANCHOR.finditer(line)}
    return {h.anchor for h in headings(text)} | explicit


def links(text: str) -> list[Link]:
    """Inline links and images, and reference definitions, outside code."""
    found: list[Link] = []
    for number, line in _prose_lines(text):
        definition = _REFERENCE_DEFINITION.match(line)
        if definition:
            found.append(Link(definition.group(1), number))
            continue
        prose = _CODE_SPAN.sub("", line)
        found.extend(Link(m.group(2), number) for m in _INLINE_LINK.finditer(prose) if m.group(2))
    return found


def sections(text: str, level: int) -> dict[str, list[Heading]]:
    """Headings of `level` -> the headings one level below them, in order."""
    grouped: dict[str, list[Heading]] = {}
    current: str | None = None
    for heading in headings(text):
        if heading.level == level:
            current = heading.text
            grouped[current] = []
        elif heading.level < level:
            current = None
        elif heading.level == level + 1 and current is not None:
            grouped[current].append(heading)
    return grouped
