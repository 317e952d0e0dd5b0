"""The HTML part of every built-in locale, opened in headless Chromium at desktop and phone widths: nothing
overflows, the button shows and leads to PRODUCT_URL, a hostile name shows literally, CJK text is drawn with a
CJK font. Screenshots are kept in build/test-artifacts/mail/ (the README's come from here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from email_service.config import Settings
from email_service.preview import preview
from email_service.template_files import read_templates
from tests.support.browser import Browser

ARTEFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "mail"
PRODUCT_URL = "https://acme.test/start?from=welcome&step=1"
HOSTILE_NAME = '<b>"Zoë" 🚀</b>'
SETTINGS = Settings.from_env({"PRODUCT_URL": PRODUCT_URL, "PRODUCT_NAME": "Acme"})
TEMPLATES = read_templates(SETTINGS.locales)
LAYOUT = """(() => {
  const a = document.querySelector('a.cta'), r = a.getBoundingClientRect(), s = getComputedStyle(a);
  return {scrollWidth: document.documentElement.scrollWidth, width: innerWidth, href: a.href,
          button: [r.left, r.right, r.width, r.height], shown: s.visibility === 'visible' && s.display !== 'none',
          text: document.body.innerText};
})()"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as running:
        yield running


@pytest.mark.parametrize("width", [600, 360])
@pytest.mark.parametrize("locale", sorted(TEMPLATES))
def test_the_html_part_reads_well_in_a_browser(browser, locale, width, tmp_path):
    page_file = tmp_path / f"welcome.{locale}.html"
    page_file.write_bytes(preview(SETTINGS, TEMPLATES, locale=locale, name=HOSTILE_NAME, fmt="html"))
    page = browser.page(width)
    page.open(page_file)
    page.screenshot(ARTEFACTS / f"welcome-{locale}-{width}.png")
    layout = page.evaluate(LAYOUT)
    summary = json.dumps({k: v for k, v in layout.items() if k != "text"})
    assert layout["scrollWidth"] <= layout["width"] == width, f"overflows horizontally: {summary}"
    left, right, button_width, button_height = layout["button"]
    assert layout["shown"] and button_width > 40 and button_height > 20 and 0 <= left < right <= width, summary
    assert layout["href"] == PRODUCT_URL
    assert HOSTILE_NAME in layout["text"], "the name must show as typed, not as markup"
    if locale.startswith(("zh", "ja", "ko")):
        fonts = page.fonts_of("td.pad p")
        assert any("CJK" in family for family in fonts), f"CJK text drawn without a CJK font: {fonts}"
