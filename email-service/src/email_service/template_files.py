"""The template files of the welcome email, read and checked once at start-up.

A template directory (the built-in one, or the operator's `TEMPLATES_DIR`, which replaces it whole) holds three
files per locale, named by its BCP 47 tag:

    welcome.<locale>.subject   one line; placeholder {{product}}
    welcome.<locale>.txt       the plain-text part; {{name}}, {{product}}, {{product_url}}
    welcome.<locale>.html      the HTML part; those and {{logo}} (the logo image, or the product name without one)

Invariant: `read_templates` returns only complete, checked sets (every listed locale has all three files, only
known placeholders appear, the HTML's elements are balanced) and otherwise raises `TemplateError` naming the
file and the line, so a bad template stops start-up instead of reaching a mailbox.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
KNOWN = {
    "subject": frozenset({"product"}),
    "txt": frozenset({"name", "product", "product_url"}),
    "html": frozenset({"name", "product", "product_url", "logo"}),
}
# Elements without an end tag, and those whose end tag HTML lets one leave out.
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                   "wbr"})
_OPTIONAL_END = frozenset({"p", "li", "dt", "dd", "option", "tr", "td", "th", "thead", "tbody", "tfoot", "colgroup"})


class TemplateError(ValueError):
    """A template is missing or wrong; `str()` reads `file:line: what`."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file, self.line = file, line


@dataclass(frozen=True, slots=True)
class LocaleFiles:
    """The checked sources of one locale, placeholders still in them."""

    locale: str
    subject: str
    text: str
    html: str


class _BalanceChecker(HTMLParser):
    def __init__(self, file: str) -> None:
        super().__init__(convert_charrefs=True)
        self.file = file
        self.open: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self.open.append((tag, self.getpos()[0]))

    def handle_endtag(self, tag: str) -> None:
        line = self.getpos()[0]
        if tag in _VOID:
            return
        while self.open and self.open[-1][0] != tag and self.open[-1][0] in _OPTIONAL_END:
            self.open.pop()
        if not self.open or self.open[-1][0] != tag:
            expected = f"</{self.open[-1][0]}> (opened on line {self.open[-1][1]})" if self.open else "nothing"
            raise TemplateError(self.file, line, f"</{tag}> closes {expected}")
        self.open.pop()

    def finish(self, last_line: int) -> None:
        self.close()
        unclosed = [(tag, line) for tag, line in self.open if tag not in _OPTIONAL_END]
        if unclosed:
            tag, line = unclosed[-1]
            raise TemplateError(self.file, line, f"<{tag}> is never closed (end of file at line {last_line})")


def _check_placeholders(file: str, text: str, kind: str) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        for match in PLACEHOLDER.finditer(line):
            if match.group(1) not in KNOWN[kind]:
                raise TemplateError(file, number, f"unknown placeholder {match.group(0)!r} "
                                                  f"(known here: {', '.join(sorted(KNOWN[kind]))})")
        if "{{" in PLACEHOLDER.sub("", line) or "}}" in PLACEHOLDER.sub("", line):
            raise TemplateError(file, number, "unbalanced '{{' or '}}'")


def _canonical(text: str) -> str:
    """`{{ name }}` written as `{{name}}`, the one spelling the renderer splices."""
    return PLACEHOLDER.sub(lambda m: "{{" + m.group(1) + "}}", text)


def _read(folder: Traversable, name: str, label: str) -> str:
    entry = folder.joinpath(name)
    if not entry.is_file():
        raise TemplateError(f"{label}/{name}", 0, "missing (each locale needs .subject, .txt and .html)")
    try:
        return entry.read_text("utf-8")
    except UnicodeDecodeError as exc:
        before = entry.read_bytes()[:exc.start]
        raise TemplateError(f"{label}/{name}", before.count(b"\n") + 1, "not UTF-8") from None


def _check_locale(folder: Traversable, label: str, locale: str) -> LocaleFiles:
    subject_file, text_file, html_file = (f"welcome.{locale}.{kind}" for kind in ("subject", "txt", "html"))
    subject = _read(folder, subject_file, label).strip("\r\n")
    text = _read(folder, text_file, label)
    html = _read(folder, html_file, label)
    if not subject.strip() or "\n" in subject or "\r" in subject:
        raise TemplateError(f"{label}/{subject_file}", 1, "the subject must be one non-empty line")
    _check_placeholders(f"{label}/{subject_file}", subject, "subject")
    _check_placeholders(f"{label}/{text_file}", text, "txt")
    _check_placeholders(f"{label}/{html_file}", html, "html")
    checker = _BalanceChecker(f"{label}/{html_file}")
    checker.feed(html)
    checker.finish(html.count("\n") + 1)
    return LocaleFiles(locale=locale, subject=_canonical(subject), text=_canonical(text), html=_canonical(html))


def builtin_folder() -> Traversable:
    return resources.files("email_service").joinpath("templates")


def read_templates(locales: tuple[str, ...], directory: str | None = None) -> dict[str, LocaleFiles]:
    """Every locale's checked files, from `directory` or the built-in set; TemplateError on the first problem.
    A listed locale without files is an error only for the first (default) locale: the others fall back to it."""
    folder: Traversable = Path(directory) if directory else builtin_folder()
    label = directory.rstrip("/") if directory else "built-in templates"
    if directory and not Path(directory).is_dir():
        raise TemplateError(label, 0, "TEMPLATES_DIR is not a directory")
    if not folder.is_dir():  # a package installed without its package data
        raise TemplateError(label, 0, f"missing: the installed package has no {folder} (package data left out?)")
    present = {entry.name.split(".")[1] for entry in folder.iterdir()
               if entry.name.startswith("welcome.") and entry.name.count(".") >= 2}
    found = {}
    for locale in sorted(present | {locales[0]}):
        found[locale] = _check_locale(folder, label, locale)
    return found
