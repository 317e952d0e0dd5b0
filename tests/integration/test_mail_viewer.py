"""`make run`'s mail viewer: a mail sent to the SMTP capture is kept as .eml and shown over HTTP (list, HTML, text,
headers, raw), everything from the mail escaped on the viewer's pages, the mail's HTML sandboxed."""

from __future__ import annotations

import signal
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx

from email_service.config import Settings
from email_service.preview import preview
from email_service.template_files import read_templates
from tests.support.browser import Browser
from tests.support.ports import free_port
from tests.support.processes import smtp_capture_process

ARTEFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "mail"

HOSTILE = '<b>"Zoë" 🚀</b>'


def welcome(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "Acme <welcome@acme.test>", "ada@example.com", subject
    message["Message-ID"] = "<viewer-test@acme.test>"
    message.set_content(f"Hello {HOSTILE}\n")
    message.add_alternative(f"<p class='greeting'>Hello {HOSTILE.replace('<', '&lt;')}</p>", subtype="html")
    return message


async def test_a_captured_mail_is_listed_escaped_and_its_parts_are_served(tmp_path):
    folder = tmp_path / "mail-capture"
    folder.mkdir()
    (folder / "000041-from-an-earlier-run.eml").write_bytes(welcome("earlier").as_bytes())
    smtp_port, http_port = free_port(), free_port()
    capture = smtp_capture_process(folder, smtp_port, http_port, tmp_path / "capture.log").start()
    try:
        await capture.wait_ready()
        await aiosmtplib.send(welcome(f"Welcome, {HOSTILE}"), hostname="127.0.0.1", port=smtp_port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as client:
            mails = (await client.get("/api/mails")).json()
            page = await client.get("/")
            name = mails[0]["file"]
            html_part = await client.get(f"/mail/{name}/html")
            text_part = await client.get(f"/mail/{name}/text")
            headers = await client.get(f"/mail/{name}/headers")
            raw = await client.get(f"/mail/{name}/raw")
            shown = await client.get(f"/mail/{name}")
            missing = await client.get("/mail/..%2Fcapture.log/raw")
        capture.signal(signal.SIGTERM)
        assert await capture.wait_exit(timeout=15) == 0, capture.output()
    finally:
        capture.stop()
    # Numbered on from the highest file already there; the earlier run's mail is listed too, newest first.
    assert [m["file"] for m in mails] == ["000042-viewer-test@acme.test.eml", "000041-from-an-earlier-run.eml"]
    assert (folder / name).read_bytes().startswith(b"From: Acme")  # the .eml stays
    assert page.status_code == 200 and "Welcome, &lt;b&gt;&quot;Zoë&quot; 🚀&lt;/b&gt;" in page.text
    assert HOSTILE not in page.text and HOSTILE not in shown.text
    assert html_part.status_code == 200 and html_part.headers["content-type"].startswith("text/html")
    assert html_part.headers["content-security-policy"].startswith("sandbox")
    assert "<p class='greeting'>Hello &lt;b>" in html_part.text
    assert text_part.text == f"Hello {HOSTILE}\n"
    assert "Subject: Welcome," in headers.text and raw.text.startswith("From: Acme")
    assert "<iframe sandbox" in shown.text
    assert missing.status_code == 404


async def test_the_viewer_shows_a_real_welcome_mail_in_a_browser(tmp_path):
    settings = Settings.from_env({"PRODUCT_NAME": "Acme", "MAIL_FROM": "Acme <welcome@acme.test>"})
    templates = read_templates(settings.locales)
    smtp_port, http_port = free_port(), free_port()
    capture = smtp_capture_process(tmp_path / "mail-capture", smtp_port, http_port, tmp_path / "capture.log").start()
    try:
        await capture.wait_ready()
        for locale in ("zh-CN", "en"):
            eml = preview(settings, templates, locale=locale, name=HOSTILE, address="ada@example.com", fmt="eml")
            await aiosmtplib.send(eml, sender="welcome@acme.test", recipients=["ada@example.com"],
                                  hostname="127.0.0.1", port=smtp_port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as client:
            newest = (await client.get("/api/mails")).json()[0]["file"]
        with Browser() as browser:
            listing = browser.page(1000, 300)
            listing.goto(f"http://127.0.0.1:{http_port}/")
            rows = listing.evaluate("[...document.querySelectorAll('td a')].map(a => a.textContent)")
            shown = browser.page(1000, 1700)
            shown.goto(f"http://127.0.0.1:{http_port}/mail/{newest}")
            shown.screenshot(ARTEFACTS / "mail-viewer.png", beyond_viewport=False)
            framed = shown.evaluate("document.querySelector('iframe').getBoundingClientRect().height")
            text = shown.evaluate("document.querySelector('pre').innerText")
    finally:
        capture.stop()
    assert rows == ["Welcome to Acme!", "欢迎加入 Acme！"]  # newest first, as typed
    assert framed > 300 and HOSTILE in text
