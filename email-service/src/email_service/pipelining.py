"""SMTP PIPELINING (RFC 2920) on an aiosmtplib connection: one mail in two round trips instead of four.

aiosmtplib sends MAIL, each RCPT and DATA one at a time, each waiting for its reply. When the server advertised
PIPELINING in its EHLO reply, `sendmail` here writes MAIL FROM, every RCPT TO and DATA in one write, reads their
replies in order, then (after the 354) sends the message and reads the final reply. Connecting, STARTTLS, AUTH,
EHLO, RSET and QUIT stay aiosmtplib's; only the reading of several replies to one write is done here, by standing in
for the protocol's response future while the group is in flight (`_ReplyQueue`), so that replies arriving in one
chunk or in several are all kept, in order.

Invariants:
- every failure raises what aiosmtplib's `sendmail` raises for the same reply (SMTPSenderRefused for MAIL,
  SMTPRecipientsRefused when every RCPT was refused, SMTPDataError for DATA and the end of data,
  SMTPServerDisconnected / SMTPReadTimeoutError when the link fails), so errors.classify decides as before;
- the first failing reply in the group decides: after a refused MAIL or every RCPT refused, the DATA reply (503 or
  554, or a 354 some servers send anyway, answered with an empty message's lone ".") is a consequence, not the cause;
- after a refused envelope or data the session is reset with RSET, so a pooled connection stays usable; after a 421,
  a timeout, a lost link or a reply nobody asked for, the connection is closed (it can no longer be trusted);
- without PIPELINING advertised, or when pipelining is off, or with an aiosmtplib whose protocol lacks what the
  reply queue stands in for, it is aiosmtplib's own `sendmail`, unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import Sequence

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX, PERIOD_REGEX, SMTPProtocol, normalize_message_line_endings

__all__ = ["advertised", "sendmail"]

# What _ReplyQueue relies on in aiosmtplib's SMTPProtocol (5.1): checked before every pipelined exchange.
_PROTOCOL_PARTS = ("_response_waiter", "_response_pending", "_command_lock", "_read_response_from_buffer", "write")
_RCPT_ACCEPTED = (250, 251)


def advertised(client: aiosmtplib.SMTP) -> bool:
    """The server said PIPELINING in its EHLO reply, and this aiosmtplib can be driven that way."""
    return client.supports_extension("pipelining") and all(hasattr(client.protocol, p) for p in _PROTOCOL_PARTS)


async def sendmail(client: aiosmtplib.SMTP, sender: str, recipients: Sequence[str], message: bytes, *,
                   pipelining: bool = True) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    """Send one mail on a connected client: pipelined when allowed and advertised, else aiosmtplib's `sendmail`.
    Returns the refused recipients (when some were accepted) and the text of the server's 250 to the end of DATA,
    as aiosmtplib's `sendmail` does."""
    if pipelining and client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            pipelining = False  # aiosmtplib's sendmail falls back to HELO, and HELO has no extensions
    if not (pipelining and advertised(client)):
        return await client.sendmail(sender, recipients, message)
    try:
        return await _pipelined(client, sender, list(recipients), message)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        if client.is_connected:
            with contextlib.suppress(ConnectionError, aiosmtplib.SMTPException):
                await client.rset()
        raise
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()
        raise


@functools.lru_cache(maxsize=16)
def _quoted_sender(sender: str) -> bytes:
    """The sender as MAIL FROM gives it (MAIL_FROM: the same for every mail, so parsed once)."""
    return quote_address(sender).encode("ascii")


def _canonical(message: bytes) -> bool:
    """Every line of `message` already ends in CRLF, and the last one too (the renderer's output): the normalisation
    of line endings would change nothing. Three C-speed counts instead of a regular expression over the message."""
    crlf = message.count(b"\r\n")
    return message.count(b"\n") == crlf and message.count(b"\r") == crlf and message.endswith(b"\r\n")


def _commands(client: aiosmtplib.SMTP, sender: str, recipients: list[str], body: bytes) -> bytes:
    """MAIL FROM, RCPT TO... and DATA as one write. Quoting parses each address as aiosmtplib's sendmail does, and
    raises the same ValueError for a bad one, before anything is sent."""
    size = [b"SIZE=%d" % len(body)] if client.supports_extension("size") else []
    commands = [[b"MAIL", b"FROM:" + _quoted_sender(sender), *size],
                *([b"RCPT", b"TO:" + quote_address(r).encode("ascii")] for r in recipients), [b"DATA"]]
    for args in commands:
        if any(COMMAND_INJECTION_REGEX.search(arg) for arg in args):
            raise ValueError("Command arg contains a prohibited control character")
    return b"".join(b" ".join(args) + b"\r\n" for args in commands)


async def _pipelined(client: aiosmtplib.SMTP, sender: str, recipients: list[str],
                     message: bytes) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    body = message if _canonical(message) else normalize_message_line_endings(message)
    group = _commands(client, sender, recipients, body)  # as aiosmtplib's sendmail: nothing sent for a bad address
    stuffed = PERIOD_REGEX.sub(b"..", body) if body.startswith(b".") or b"\n." in body else body
    data = stuffed + b".\r\n"
    protocol = client.protocol
    if protocol is None or protocol._command_lock is None:
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    timeout = client.timeout
    async with protocol._command_lock:
        queue = _ReplyQueue(protocol)
        try:
            protocol.write(group)
            replies = await _take_envelope(queue, sender, recipients, timeout)
            failure, refused = _envelope_failure(sender, recipients, replies)
            if failure is None:
                protocol.write(data)
                (end,) = await queue.take(1, timeout)
                replies.append(end)
                if end.code != 250:
                    failure = aiosmtplib.SMTPDataError(end.code, end.message)
            elif replies[-1].code == 354:  # the server opened the data anyway: end an empty message at once
                protocol.write(b".\r\n")
                await queue.take(1, timeout)
            unasked = bool(queue.replies)
        finally:
            queue.detach()
    if unasked or any(r.code == 421 for r in replies):
        client.close()  # a 421 closes the session; a reply nobody asked for means we are out of step
    if failure is not None:
        raise failure
    return refused, replies[-1].message


async def _take_envelope(queue: _ReplyQueue, sender: str, recipients: list[str],
                         timeout: float | None) -> list[aiosmtplib.SMTPResponse]:
    """The replies to MAIL, RCPT... and DATA. When the link fails before all came, a refusal among those that did
    come is what is raised (a 421 to MAIL, then the server hangs up: SMTPSenderRefused 421, as sent one at a time)."""
    try:
        return await queue.take(len(recipients) + 2, timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException) as exc:
        refusal = _refusal(sender, recipients, list(queue.replies))
        if refusal is None:
            raise
        raise refusal from exc


def _refusal(sender: str, recipients: list[str], replies: list[aiosmtplib.SMTPResponse]
             ) -> aiosmtplib.SMTPSenderRefused | aiosmtplib.SMTPRecipientsRefused | None:
    """The refusal of the envelope in the first replies of a group, if any: MAIL refused, or every RCPT."""
    if not replies:
        return None
    mail, rcpts = replies[0], replies[1:1 + len(recipients)]
    if mail.code != 250:
        return aiosmtplib.SMTPSenderRefused(mail.code, mail.message, sender)
    refused = [aiosmtplib.SMTPRecipientRefused(r.code, r.message, address)
               for address, r in zip(recipients, rcpts, strict=False) if r.code not in _RCPT_ACCEPTED]
    if len(rcpts) == len(recipients) and len(refused) == len(recipients):
        return aiosmtplib.SMTPRecipientsRefused(refused)
    return None


def _envelope_failure(sender: str, recipients: list[str], replies: list[aiosmtplib.SMTPResponse]
                      ) -> tuple[aiosmtplib.SMTPException | None, dict[str, aiosmtplib.SMTPResponse]]:
    """What the replies to MAIL, RCPT... and DATA mean: the exception the first failure raises (None: go on to
    the data), and the recipients refused while others were accepted."""
    refusal = _refusal(sender, recipients, replies)
    if refusal is not None:
        return refusal, {}
    data = replies[-1]
    if data.code != 354:
        return aiosmtplib.SMTPDataError(data.code, data.message), {}
    return None, {address: aiosmtplib.SMTPResponse(r.code, r.message)
                  for address, r in zip(recipients, replies[1:-1], strict=True) if r.code not in _RCPT_ACCEPTED}


class _ReplyQueue:
    """Stands in for SMTPProtocol's response future while a group of commands is in flight.

    The protocol parses one reply per chunk received and hands it to its future (`set_result`), dropping what
    arrives while that future is done and not yet read. This stand-in is never done: it keeps every reply, and on
    each one also takes the complete replies still in the protocol's buffer (several replies in one chunk). A lost
    link or an unparseable reply comes as `set_exception`, as to the future."""

    def __init__(self, protocol: SMTPProtocol) -> None:
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self.replies: collections.deque[aiosmtplib.SMTPResponse] = collections.deque()
        self.error: BaseException | None = None
        self._wakeup: asyncio.Future[None] | None = None
        protocol._response_waiter = self  # type: ignore[assignment]
        protocol._response_pending = True

    def detach(self) -> None:
        """Give the protocol a fresh response future again (None when the link is gone), as read_response does."""
        self._protocol._response_pending = False
        self._protocol._response_waiter = None if self._protocol.transport is None else self._loop.create_future()

    # -- what the protocol calls on its response future

    def done(self) -> bool:
        return False

    def set_result(self, response: aiosmtplib.SMTPResponse) -> None:
        self.replies.append(response)
        try:
            while (buffered := self._protocol._read_response_from_buffer()) is not None:
                self.replies.append(buffered)
        except Exception as exc:  # noqa: BLE001 - a malformed reply fails the exchange, as it would the future
            self.set_exception(exc)
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def exception(self) -> BaseException | None:
        return self.error

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # -- what the exchange calls

    async def take(self, count: int, timeout: float | None) -> list[aiosmtplib.SMTPResponse]:
        """The next `count` replies in order; raises the link's error (or a read timeout) when they do not come.
        Replies that did come before a failure are kept in order, so the caller can still read what they say."""
        deadline = None if timeout is None else self._loop.time() + timeout
        while len(self.replies) < count and self.error is None:
            self._wakeup = self._loop.create_future()
            remaining = None if deadline is None else max(0.0, deadline - self._loop.time())
            try:
                await asyncio.wait_for(self._wakeup, remaining)
            except asyncio.TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from None
        if len(self.replies) < count:
            assert self.error is not None
            raise self.error
        return [self.replies.popleft() for _ in range(count)]
