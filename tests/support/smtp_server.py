"""The one SMTP test server of the suites: aiosmtpd in a thread on a fixed loopback port, told how to misbehave.

    server = SmtpTestServer(free_port()); server.start()
    server.defer_next(2, "451 4.3.0 temporary local problem")    # the next two mails get a 4xx
    server.fail_with("421 4.3.2 try later")               # every mail, until fail_with(None)
    server.reject_recipient("nobody@example.com")         # 550 for this RCPT
    server.delay = 0.5                                    # every DATA takes this long to answer
    server.queue_before_reply = True                      # like a real MTA: queued once the data is in
    server.rules.append(rule)                             # any other reply to a mail whose data is in
    server.command_rules.append(rule)                     # a reply to MAIL or RCPT (throttling at RCPT, ...)
    server.greeting_rules.append(rule)                    # refuse a new connection at the greeting, then close it
    server.max_open_connections, server.connection_timeline  # connections open at once, and when
    SmtpTestServer(port, pipelining=False)                # EHLO without PIPELINING (advertised by default)
    server.pipelined                                      # mails whose RCPT came in the same read as MAIL
    server.stop(); server.start()                         # an outage: same port, what was received is kept

Invariants:
- a mail is recorded exactly when the server has taken responsibility for it: after its 250 is decided (before
  the delay when `queue_before_reply`, so a client that gives up waiting has sent it all the same);
- each recorded mail carries the monotonic time it was accepted and its event id, read from the Message-ID
  `<event_id@domain>` the email-service writes, so suites count mails per event without parsing whole messages;
- the counters (deferred, refused, cut off) only grow, across stop()/start();
- every TCP connection is recorded (`connections`) from the moment it is made, before any greeting rule, so
  `max_open_connections` counts what clients opened, those refused at the greeting included; the timeline holds
  (monotonic time, connections open) after every change.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

ACCEPTED = "250 2.0.0 accepted"
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<([^@>\s]+)@", re.IGNORECASE | re.MULTILINE)

# A reply rule sees every mail whose data is in and may answer it with a reply other than 250 (None: no opinion).
# It runs under the server's lock, in the server's thread, and may read the server (count(), received(), ...).
ReplyRule = Callable[["SmtpTestServer", Envelope], str | None]


@dataclass(eq=False)
class Connection:
    """One TCP connection a client made to the server."""
    index: int  # 0, 1, ... in the order the connections were made (across stop()/start())
    peer: tuple[str, int]
    opened_at: float  # time.monotonic()
    closed_at: float | None = None
    refused_with: str | None = None  # the greeting rule's reply that refused it; None: greeted with 220

    @property
    def open(self) -> bool:
        return self.closed_at is None


# A greeting rule sees every new connection before it is greeted and may refuse it (a reply instead of the 220; the
# server then closes it). A command rule sees MAIL and RCPT ("mail", "rcpt") and may answer other than 250. Both run
# under the server's lock, in the server's thread, like reply rules; None: no opinion.
GreetingRule = Callable[["SmtpTestServer", Connection], str | None]
CommandRule = Callable[["SmtpTestServer", str, Connection], str | None]


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    event_id: str | None  # from the Message-ID; None when there is none
    at: float  # time.monotonic() when the server accepted it
    peer_port: int  # the client's source port (which connection sent it)
    helo: str = ""  # the name the client gave in EHLO/HELO

    @property
    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


def event_id_of(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    match = _MESSAGE_ID.search(head)
    return match.group(1).decode("ascii", "replace") if match else None


class _TrackedSMTP(SMTP):
    """aiosmtpd's protocol, telling the test server of every connection made and lost, and refusing one at the
    greeting when a greeting rule says so (through the asyncio protocol's own methods, before aiosmtpd greets)."""

    def __init__(self, test_server: SmtpTestServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.test_server = test_server
        self.tracked: Connection | None = None
        self.made = False

    def connection_made(self, transport: Any) -> None:
        if self.made:  # made again by STARTTLS: the same TCP connection
            super().connection_made(transport)
            return
        self.made = True
        self.tracked = self.test_server.connection_opened(transport.get_extra_info("peername"))
        if self.tracked is not None and self.tracked.refused_with is not None:
            transport.write(f"{self.tracked.refused_with}\r\n".encode())
            transport.close()  # flushes the reply first
            return
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.tracked is not None:
            self.test_server.connection_closed(self.tracked)
            if self.tracked.refused_with is not None:
                return  # aiosmtpd never saw this connection
        super().connection_lost(error)


class _Controller(Controller):
    def __init__(self, test_server: SmtpTestServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.test_server = test_server

    def factory(self) -> SMTP:  # aiosmtpd's documented way to use a protocol of one's own
        return _TrackedSMTP(self.test_server, self.handler, **self.SMTP_kwargs)


class _Handler:
    def __init__(self, server: SmtpTestServer) -> None:
        self.server = server

    async def handle_EHLO(self, server: Any, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves it to this hook once the hook exists
        if self.server.pipelining:  # as Postfix does; aiosmtpd reads commands line by line, so it can take them
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: Any, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        # aiosmtpd's stream reader (private): the RCPT already waiting there came in one write with this MAIL
        waiting = getattr(getattr(server, "_reader", None), "_buffer", b"")
        if bytes(waiting[:4]).upper() == b"RCPT":
            with self.server.lock:
                self.server.pipelined += 1
        reply = self.server.command_reply("mail", session)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.server.command_reply("rcpt", session)
        if reply is not None:
            return reply
        reply = self.server.recipient_replies.get(address.lower())
        if reply is not None:
            with self.server.lock:
                self.server.refused += 1
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        srv = self.server
        with srv.lock:
            srv.active += 1
            srv.max_active = max(srv.max_active, srv.active)
            reply = srv.reply_for(envelope)
        recorded = False
        try:
            if reply == ACCEPTED and srv.queue_before_reply:
                srv.record(envelope, session)
                recorded = True
            if srv.delay:
                await asyncio.sleep(srv.delay)
        finally:
            with srv.lock:
                srv.active -= 1
        if reply == ACCEPTED and not recorded:
            srv.record(envelope, session)
        return reply


class SmtpTestServer:
    """aiosmtpd on 127.0.0.1:`port`, optionally with STARTTLS or implicit TLS and AUTH."""

    def __init__(self, port: int, *, tls_context: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 credentials: tuple[str, str] | None = None, pipelining: bool = True) -> None:
        self.port = port
        self.pipelining = pipelining  # advertise PIPELINING (RFC 2920) in the EHLO reply
        self.pipelined = 0  # mails whose MAIL FROM arrived together with their RCPT TO (a pipelining client)
        self.lock = threading.RLock()  # reentrant: reply rules run under it and may read the server
        self.mails: list[ReceivedMail] = []
        self.recipient_replies: dict[str, str] = {}
        self.rules: list[ReplyRule] = []
        self.command_rules: list[CommandRule] = []
        self.greeting_rules: list[GreetingRule] = []
        self.connections: list[Connection] = []
        self.open_connections = 0
        self.max_open_connections = 0
        self.connection_timeline: list[tuple[float, int]] = []  # (monotonic time, open connections) after each change
        self.command_replies = 0  # MAIL/RCPT answered by a command rule
        self._open_by_peer: dict[tuple[str, int], Connection] = {}
        self._serving = False  # False while aiosmtpd's controller probes its own port at start: not a client
        self.delay = 0.0
        self.queue_before_reply = False
        self.deferrals = 0  # mails still to answer with deferral_reply (defer_next)
        self.deferral_reply = "451 4.3.0 temporary local problem"
        self.failing_reply: str | None = None  # answer every mail with this while set (fail_with)
        self.deferred = 0  # mails answered with anything but 250
        self.refused = 0  # RCPT refused
        self.active = 0  # DATA commands being handled now
        self.max_active = 0
        self.cut_off_in_data = 0  # DATA commands in progress when the server was stopped
        self.stops = 0
        self._controller_kwargs = self._security(tls_context, implicit_tls, credentials)
        self._controller: Controller | None = None

    @staticmethod
    def _security(tls_context: ssl.SSLContext | None, implicit_tls: bool,
                  credentials: tuple[str, str] | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if credentials is not None:
            def authenticator(server: Any, session: Session, envelope: Envelope, mechanism: str,
                              auth_data: Any) -> AuthResult:
                ok = isinstance(auth_data, LoginPassword) and (
                    auth_data.login.decode(), auth_data.password.decode()) == credentials
                return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

            # aiosmtpd cannot tell that an implicit-TLS session is encrypted, so it only knows to require TLS for
            # AUTH with STARTTLS; with implicit TLS every byte is encrypted anyway.
            kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=not implicit_tls)
        if implicit_tls:
            kwargs["ssl_context"] = tls_context
        elif tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=True)
        return kwargs

    # -- lifecycle

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        assert self._controller is None, "already running"
        controller = _Controller(self, _Handler(self), hostname="127.0.0.1", port=self.port,
                                 server_hostname="localhost", ready_timeout=10, **self._controller_kwargs)
        controller.start()
        self._controller = controller
        with self.lock:
            self._serving = True

    def stop(self) -> None:
        """Go down hard: sessions in progress are cut off, new connections are refused."""
        if self._controller is None:
            return
        with self.lock:
            self.cut_off_in_data += self.active
            self._serving = False
        self._controller.stop()
        self._controller = None
        self.stops += 1
        with self.lock:  # connections the stop cut off may not all have reported their loss
            for conn in list(self._open_by_peer.values()):
                self.connection_closed(conn)

    # -- behaviour

    def defer_next(self, count: int, reply: str = "451 4.3.0 temporary local problem") -> None:
        with self.lock:
            self.deferrals = count
            self.deferral_reply = reply

    def fail_with(self, reply: str | None) -> None:
        """Answer every mail with `reply` (e.g. "421 4.3.2 try later") until called with None."""
        with self.lock:
            self.failing_reply = reply

    def reject_recipient(self, address: str, reply: str = "550 5.1.1 no such user") -> None:
        self.recipient_replies[address.lower()] = reply

    def connection_opened(self, peer: tuple[str, int]) -> Connection | None:
        """Record a new connection and ask the greeting rules whether to refuse it (called by the protocol; None:
        the controller's own probe at start, not recorded)."""
        with self.lock:
            if not self._serving:
                return None
            conn = Connection(len(self.connections), peer, time.monotonic())
            self.connections.append(conn)
            self._open_by_peer[peer] = conn
            self._count_open(+1)
            for rule in self.greeting_rules:
                if (reply := rule(self, conn)) is not None:
                    conn.refused_with = reply
                    break
            return conn

    def connection_closed(self, conn: Connection) -> None:
        with self.lock:
            if conn.closed_at is not None:
                return
            conn.closed_at = time.monotonic()
            self._open_by_peer.pop(conn.peer, None)
            self._count_open(-1)

    def _count_open(self, change: int) -> None:
        self.open_connections += change
        self.max_open_connections = max(self.max_open_connections, self.open_connections)
        self.connection_timeline.append((time.monotonic(), self.open_connections))

    def command_reply(self, stage: str, session: Session) -> str | None:
        """The command rules' answer to MAIL or RCPT on the session's connection (None: go on as usual)."""
        with self.lock:
            conn = self._open_by_peer.get(session.peer) if session.peer else None
            if conn is None:
                return None
            for rule in self.command_rules:
                if (reply := rule(self, stage, conn)) is not None:
                    self.command_replies += 1
                    return reply
            return None

    def reply_for(self, envelope: Envelope) -> str:
        """The answer to a mail whose data is in (called under the lock)."""
        reply = self.failing_reply
        if reply is None and self.deferrals:
            self.deferrals -= 1
            reply = self.deferral_reply
        for rule in self.rules:
            if reply is not None:
                break
            reply = rule(self, envelope)
        if reply is None:
            return ACCEPTED
        self.deferred += 1
        return reply

    def record(self, envelope: Envelope, session: Session) -> None:
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        mail = ReceivedMail(str(envelope.mail_from), list(envelope.rcpt_tos), content, event_id_of(content),
                            time.monotonic(), session.peer[1] if session.peer else 0, session.host_name or "")
        with self.lock:
            self.mails.append(mail)

    # -- what was received

    def received(self) -> list[ReceivedMail]:
        with self.lock:
            return list(self.mails)

    def count(self) -> int:
        with self.lock:
            return len(self.mails)

    def message_ids(self) -> list[str]:
        return [str(mail.message["Message-ID"]) for mail in self.received()]

    def by_event(self) -> Counter[str]:
        """event id -> mails accepted for it (more than 1: a duplicate); mails without an event id under ""."""
        return Counter(mail.event_id or "" for mail in self.received())

    def accepted_since(self, at: float) -> list[ReceivedMail]:
        return [mail for mail in self.received() if mail.at > at]


def first_accepted(mails: Iterable[ReceivedMail]) -> dict[str, float]:
    """event id -> when its first mail was accepted (a duplicate's later time is not the one a user waited for)."""
    first: dict[str, float] = {}
    for mail in mails:
        if mail.event_id is not None:
            first.setdefault(mail.event_id, mail.at)
    return first


def longest_gap(times: Iterable[float], start: float, end: float) -> tuple[float, float]:
    """The longest pause between two acceptances (mail times) that ends within (start, end]: (gap start, gap end).

    The pause running at `start` counts from the last acceptance before it, so a pause that a failure at `start`
    merely extends is measured whole; with no acceptance in (start, end] the answer is (start, start)."""
    ordered = sorted(times)
    best = (start, start)
    previous = max((t for t in ordered if t <= start), default=start)
    for at in (t for t in ordered if start < t <= end):
        if at - previous > best[1] - best[0]:
            best = (previous, at)
        previous = at
    return best
