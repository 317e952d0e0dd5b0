"""The welcome email rendered from prepared templates: correct MIME, both locales, no injection."""

from __future__ import annotations

import email
import email.header
import email.parser
import email.policy
from datetime import datetime, timezone

import pytest

from email_service.events import UserSignedUp
from email_service.templates import WelcomeEmail, encoded_words

EVENT_ID = "0b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def render(name: str = "Ada Lovelace", locale: str = "en", email_address: str = "ada@example.com"):
    event = UserSignedUp(event_id=EVENT_ID, occurred_at=datetime.now(timezone.utc), email=email_address, name=name,
                         locale=locale)
    rendered = WelcomeEmail("Acme <welcome@acme.test>", "Acme").render(event)
    return rendered, email.message_from_bytes(rendered.data, policy=email.policy.default)


@pytest.mark.parametrize("locale,subject,greeting", [
    ("en", "Welcome to Acme!", "Hi Ada Lovelace,"),
    ("zh-CN", "欢迎加入 Acme！", "Ada Lovelace，您好："),
])
def test_both_locales_render_a_multipart_alternative(locale, subject, greeting):
    rendered, msg = render(locale=locale)
    assert msg["Subject"] == subject
    assert msg["From"] == "Acme <welcome@acme.test>"
    assert msg["To"].addresses[0].addr_spec == "ada@example.com"
    assert msg["To"].addresses[0].display_name == "Ada Lovelace"
    assert msg["Message-ID"] == f"<{EVENT_ID}@acme.test>" == rendered.message_id
    assert msg["Content-Language"] == locale and msg["Date"]
    assert msg.get_content_type() == "multipart/alternative"
    text, html_part = msg.get_payload()
    assert text.get_content_type() == "text/plain" and greeting in text.get_content()
    assert html_part.get_content_type() == "text/html" and "<strong>Acme</strong>" in html_part.get_content()
    assert rendered.sender == "welcome@acme.test" and rendered.recipient == "ada@example.com"


@pytest.mark.parametrize("name", ["王" * 100, "x" * 100, "Zoë " * 25])
def test_every_line_is_crlf_terminated_and_within_limits(name):
    rendered, msg = render(name=name.strip(), locale="zh-CN")
    head, _, body = rendered.data.partition(b"\r\n\r\n")
    lines = rendered.data.split(b"\r\n")
    assert b"\n" not in b"".join(lines) and b"\r" not in b"".join(lines)
    assert max(len(line) for line in head.split(b"\r\n")) <= 998  # RFC 5322's hard limit for header lines
    assert max(len(line) for line in body.split(b"\r\n")) <= 78
    raw_to = rendered.data.split(b"To: ", 1)[1].split(b"\r\n <", 1)[0].decode("ascii")
    decoded = str(email.header.make_header(email.header.decode_header(raw_to.replace("\r\n", ""))))
    assert decoded.strip('"') == name.strip()


def test_name_cannot_inject_headers():
    # The producer refuses CR/LF already; the renderer must be safe on its own too.
    event = UserSignedUp(event_id=EVENT_ID, occurred_at=datetime.now(timezone.utc), email="ada@example.com",
                         name="Eve\r\nBcc: victim@example.com\r\nX-Evil: 1", locale="en")
    rendered = WelcomeEmail("Acme <welcome@acme.test>", "Acme").render(event)
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(rendered.data)
    assert headers["Bcc"] is None and headers["X-Evil"] is None
    assert b"Bcc:" not in rendered.data and b"victim" not in rendered.data.split(b"\r\n\r\n")[0]


def test_name_is_escaped_in_html_and_verbatim_in_text():
    name = '<script>alert("x")</script> & <img src=x onerror=y>'
    _, msg = render(name=name)
    text, html_part = msg.get_payload()
    html = html_part.get_content()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=y&gt;" in html
    assert name in text.get_content()
    assert msg["To"].addresses[0].display_name == name  # a quoted-string: backslash-escapes and all


def test_same_event_gives_the_same_message_id():
    assert render()[0].message_id == render(name="Other")[0].message_id


def test_encoded_words_split_on_character_boundaries():
    words = encoded_words("é" * 40 + "王" * 30)
    assert all(len(w.strip()) <= 75 for w in words.split("\r\n"))
    assert str(email.header.make_header(email.header.decode_header(words.replace("\r\n", "")))) == "é" * 40 + "王" * 30


def test_date_is_written_with_a_numeric_zone():
    rendered, _ = render()
    assert rendered.data.split(b"Date: ", 1)[1].split(b"\r\n", 1)[0].endswith(b" +0000")


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_html_has_the_button_to_the_product_and_the_plain_text_the_link(locale):
    event = UserSignedUp(event_id=EVENT_ID, occurred_at=datetime.now(timezone.utc), email="a@example.com",
                         name="Ada", locale=locale)
    data = WelcomeEmail("Acme <welcome@acme.test>", "Acme", product_url="https://acme.test/start?a=1&b=2",
                        logo_url="https://acme.test/logo.png").render(event).data
    text, html_part = email.message_from_bytes(data, policy=email.policy.default).get_payload()
    assert 'href="https://acme.test/start?a=1&amp;b=2"' in html_part.get_content()
    assert '<img src="https://acme.test/logo.png"' in html_part.get_content()
    assert "https://acme.test/start?a=1&b=2" in text.get_content() and "{{" not in html_part.get_content()
