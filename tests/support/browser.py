"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`): no websocket library,
no Playwright download, only Debian's `chromium` (installed by `make system-deps`).

Chromium reads commands from fd 3 and writes replies and events to fd 4, each a JSON object ended by NUL. `Browser`
sends one command at a time and waits, bounded, for its reply; events that arrive meanwhile are kept in order for
`wait_event`. One `Page` is one tab attached in flat mode (commands carry its session id).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


class BrowserError(RuntimeError):
    """Chromium is missing, answered with an error, or did not answer in time."""


def chromium_path() -> str:
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError("no Chromium on PATH: run `make system-deps` (Debian packages chromium, fonts-noto-cjk)")


class Browser:
    def __init__(self, timeout: float = 20.0) -> None:
        self.timeout = timeout
        to_child, self._send_fd = os.pipe()
        self._recv_fd, from_child = os.pipe()
        self._events: deque[dict[str, Any]] = deque()
        self._buffer = b""
        self._next_id = 0
        # The child must see its ends as fds 3 and 4 (whatever numbers they have here): copied above 10 first so
        # that neither copy overwrites the other, then into place; every other pipe end is close-on-exec.
        def wire() -> None:
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child)]
            for target, fd in zip((3, 4), high, strict=True):
                os.dup2(fd, target)
                os.close(fd)

        self.process = subprocess.Popen(
            [chromium_path(), "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
             "--user-data-dir=" + str(Path(os.environ.get("TMPDIR", "/tmp")) / f"cdp-{os.getpid()}-{id(self)}"),
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire, close_fds=False)
        os.close(to_child)
        os.close(from_child)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._recv_fd], [], [], left)[0]:
                raise BrowserError(f"Chromium did not answer within {self.timeout} s")
            chunk = os.read(self._recv_fd, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed the pipe (exit status {self.process.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._send_fd, json.dumps(command).encode("utf-8") + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self._events.append(message)

    def wait_event(self, method: str, session: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for event in list(self._events):
                if event["method"] == method and event.get("sessionId") == session:
                    self._events.remove(event)
                    return event.get("params", {})
            message = self._read_message(deadline)
            if "method" in message:
                self._events.append(message)

    def page(self, width: int, height: int = 800) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, session, width, height)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except BrowserError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._send_fd)
        os.close(self._recv_fd)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    def __init__(self, browser: Browser, session: str, width: int, height: int) -> None:
        self.browser, self.session = browser, session
        for domain in ("Page", "DOM", "CSS"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500})

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, self.session)

    def open(self, path: Path) -> None:
        self.goto(path.resolve().as_uri())

    def goto(self, url: str) -> None:
        """Load `url` and wait for its load event (its frames loaded too)."""
        self.call("Page.navigate", {"url": url})
        self.browser.wait_event("Page.loadEventFired", self.session)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def fonts_of(self, selector: str) -> dict[str, int]:
        """The platform fonts that drew the text of the first element matching `selector`: family -> glyphs."""
        root = self.call("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
        node = self.call("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        fonts = self.call("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        return {font["familyName"]: font["glyphCount"] for font in fonts}

    def screenshot(self, path: Path, beyond_viewport: bool = True) -> None:
        """A PNG of the page; `beyond_viewport=False` for pages with frames of another origin (a sandboxed iframe),
        which Chromium leaves blank when it captures beyond the viewport: size the page to fit instead."""
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": beyond_viewport})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
