"""Template directories are checked at start-up: every problem names the file and the line; fallbacks count."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from email_service import template_files
from email_service.events import UserSignedUp
from email_service.template_files import TemplateError, builtin_folder, read_templates
from email_service.templates import WelcomeEmail

EVENT_ID = "0b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for entry in builtin_folder().iterdir():
        if entry.name.startswith("welcome."):
            (tmp_path / entry.name).write_bytes(entry.read_bytes())
    return tmp_path


def test_the_built_in_templates_pass_their_own_checks():
    assert set(read_templates(("en", "zh-CN"))) == {"en", "zh-CN"}


@pytest.mark.parametrize("edit,file,line,words", [
    (("welcome.en.html", 30, "Hi {{name}},", "Hi {{nmae}},"), "welcome.en.html", 30, "unknown placeholder"),
    (("welcome.en.html", 37, "</tr></table>", "</tr></div>"), "welcome.en.html", 37, "</div> closes </table>"),
    (("welcome.en.txt", 1, "Hi {{name}},", "Hi {{name},"), "welcome.en.txt", 1, "unbalanced"),
    (("welcome.en.subject", 1, "Welcome", "{{name}}, welcome"), "welcome.en.subject", 1, "unknown placeholder"),
])
def test_a_broken_template_names_file_and_line(folder, edit, file, line, words):
    name, number, old, new = edit
    lines = (folder / name).read_text("utf-8").split("\n")
    assert old in lines[number - 1], f"{name}:{number} no longer holds {old!r}"
    lines[number - 1] = lines[number - 1].replace(old, new)
    (folder / name).write_text("\n".join(lines), "utf-8")
    with pytest.raises(TemplateError) as caught:
        read_templates(("en", "zh-CN"), str(folder))
    assert (caught.value.file, caught.value.line) == (f"{folder}/{file}", line) and words in str(caught.value)


def test_a_locale_missing_a_part_stops_start_up(folder):
    (folder / "welcome.zh-CN.txt").unlink()
    with pytest.raises(TemplateError, match="welcome.zh-CN.txt:0: missing"):
        read_templates(("en", "zh-CN"), str(folder))


def test_a_package_installed_without_its_templates_stops_start_up(monkeypatch, tmp_path):
    monkeypatch.setattr(template_files, "builtin_folder", lambda: tmp_path / "templates")
    with pytest.raises(TemplateError, match=r"built-in templates:0: missing: the installed package has no .*templates"):
        read_templates(("en", "zh-CN"))


def test_an_added_locale_is_used_and_an_unknown_one_falls_back_counted(folder):
    for kind in ("subject", "txt", "html"):
        shutil.copy(folder / f"welcome.en.{kind}", folder / f"welcome.de.{kind}")
    (folder / "welcome.de.subject").write_text("Willkommen bei {{product}}!\n", "utf-8")
    fallbacks = []
    renderer = WelcomeEmail("Acme <welcome@acme.test>", "Acme", templates=read_templates(("en",), str(folder)),
                            on_fallback=lambda: fallbacks.append(1))

    def subject(locale: str) -> bytes:
        event = UserSignedUp(event_id=EVENT_ID, occurred_at=datetime.now(timezone.utc), email="a@example.com",
                             name="A", locale=locale)
        return renderer.render(event).data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]

    assert subject("de") == b"Willkommen bei Acme!" and not fallbacks
    assert subject("fr-CA") == b"Welcome to Acme!" and len(fallbacks) == 1


def test_the_service_exits_2_naming_the_file_on_a_bad_template(folder):
    (folder / "welcome.en.html").write_text("<p>{{name}}</div>", "utf-8")
    done = subprocess.run([sys.executable, "-m", "email_service", "preview"], capture_output=True, text=True,
                          env={"TEMPLATES_DIR": str(folder), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 2 and f"{folder}/welcome.en.html:1:" in done.stderr


def test_preview_writes_the_part_asked_for():
    done = subprocess.run([sys.executable, "-m", "email_service", "preview", "--locale", "zh-CN", "--name", "Zoë",
                           "--format", "text"], capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.decode("utf-8").startswith("Zoë，您好：")
