"""A real SMTP server for tests (aiosmtpd, in a thread) that records mails and can be told to fail.

    server.defer_next(2, "451 4.3.0 try again later")   # the next two mails get a 4xx
    server.reject_recipient("nobody@example.com", "550 5.1.1 no such user")
    server.delay = 0.5                                    # answer DATA slowly
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import threading
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


class _Handler:
    def __init__(self, server: SmtpTestServer) -> None:
        self.server = server

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.server.recipient_replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.server.lock:
            self.server.active += 1
            self.server.max_active = max(self.server.max_active, self.server.active)
        if self.server.queue_before_reply:  # like a real MTA: queued once the data is in, the 250 follows later
            with self.server.lock:
                self.server.mails.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        try:
            if self.server.delay:
                await asyncio.sleep(self.server.delay)
        finally:
            with self.server.lock:
                self.server.active -= 1
        if self.server.queue_before_reply:
            return "250 2.0.0 accepted"
        with self.server.lock:
            if self.server.deferrals:
                self.server.deferrals -= 1
                self.server.deferred += 1
                return self.server.deferral_reply
            self.server.mails.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 accepted"


class SmtpTestServer:
    def __init__(self, port: int, *, tls_context: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 credentials: tuple[str, str] | None = None) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.mails: list[ReceivedMail] = []
        self.recipient_replies: dict[str, str] = {}
        self.deferrals = 0
        self.deferred = 0
        self.deferral_reply = "451 4.3.0 try again later"
        self.delay = 0.0
        self.active = 0
        self.max_active = 0  # most DATA commands handled at the same time
        self.queue_before_reply = False  # record a mail before answering (and before the delay), not after
        kwargs: dict = {}
        if credentials is not None:
            def authenticator(server, session, envelope, mechanism, auth_data):
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
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=port, server_hostname="localhost",
                                     **kwargs)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def defer_next(self, count: int, reply: str = "451 4.3.0 try again later") -> None:
        with self.lock:
            self.deferrals = count
            self.deferral_reply = reply

    def reject_recipient(self, address: str, reply: str = "550 5.1.1 no such user") -> None:
        self.recipient_replies[address.lower()] = reply

    def received(self) -> list[ReceivedMail]:
        with self.lock:
            return list(self.mails)

    def count(self) -> int:
        with self.lock:
            return len(self.mails)

    def message_ids(self) -> list[str]:
        return [str(mail.message["Message-ID"]) for mail in self.received()]
