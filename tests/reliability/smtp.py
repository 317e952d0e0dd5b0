"""An SMTP server the reliability scenarios can break: stop it and start a new one on the same port, make it answer
4xx for a stretch, refuse some recipients with 5xx, slow it down.

Mails are counted by event id (from the Message-ID `<event_id@domain>` the email-service writes), across restarts,
without parsing whole messages: a run accepts thousands of them.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter, defaultdict

from aiosmtpd.controller import Controller

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<([^@>\s]+)@", re.IGNORECASE | re.MULTILINE)


class _Handler:
    def __init__(self, server: ChaosSmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.server.recipient_replies.get(address.lower())
        if reply is not None:
            with self.server.lock:
                self.server.refused += 1
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        srv = self.server
        with srv.lock:
            srv.active += 1
        try:
            if srv.delay:
                await asyncio.sleep(srv.delay)
        finally:
            with srv.lock:
                srv.active -= 1
        with srv.lock:
            if srv.failing_reply is not None:
                srv.deferred += 1
                return srv.failing_reply
            head = envelope.content.split(b"\r\n\r\n", 1)[0]
            match = _MESSAGE_ID.search(head)
            if match is None:
                srv.without_message_id += 1
            else:
                event_id = match.group(1).decode("ascii", "replace")
                srv.accepted[event_id] += 1
                srv.sessions[event_id].append(f"{time.time():.3f} from {session.peer[1]}")
        return "250 2.0.0 accepted"


class ChaosSmtpServer:
    """aiosmtpd in a thread on a fixed loopback port. What it accepted survives stop()/start()."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.accepted: Counter[str] = Counter()  # event id -> mails accepted (more than 1: a duplicate)
        self.sessions: defaultdict[str, list[str]] = defaultdict(list)  # event id -> when and from which port
        self.without_message_id = 0
        self.recipient_replies: dict[str, str] = {}
        self.failing_reply: str | None = None  # answer every DATA with this while set
        self.delay = 0.0
        self.active = 0  # DATA commands being handled now
        self.deferred = 0  # DATA answered with failing_reply
        self.refused = 0  # RCPT refused
        self.cut_off_in_data = 0  # DATA commands in progress when the server was stopped
        self.stops = 0
        self._controller: Controller | None = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        assert self._controller is None, "already running"
        controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, ready_timeout=10)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Go down hard: sessions in progress are cut off, new connections are refused."""
        if self._controller is None:
            return
        with self.lock:
            self.cut_off_in_data += self.active
        self._controller.stop()
        self._controller = None
        self.stops += 1

    def fail_with(self, reply: str | None) -> None:
        """Answer every DATA with `reply` (e.g. "421 4.3.2 try later") until called with None."""
        with self.lock:
            self.failing_reply = reply

    def refuse_recipient(self, address: str, reply: str = "550 5.1.1 no such user") -> None:
        self.recipient_replies[address.lower()] = reply

    def mails(self) -> Counter[str]:
        with self.lock:
            return Counter(self.accepted)

    def total(self) -> int:
        with self.lock:
            return sum(self.accepted.values())
