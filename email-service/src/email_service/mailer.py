"""A small pool of reused SMTP connections (aiosmtplib).

Opening a connection (and TLS, and AUTH) per mail costs more than the mail itself, so connections are kept and
reused, and a mail goes in two round trips instead of four where the server allows PIPELINING (pipelining.py,
SMTP_PIPELINING). A connection that failed in any way is closed and dropped, never reused; the pool opens a fresh one.
A reused connection the server had quietly closed (idle timeout) gets one immediate second try on a new one.

Every send first takes a slot of this process's SendGovernor (how many exchanges at once, how fast: it slows down
when the provider throttles), then a connection (a new one needs a connection lease of the deployment-wide
SendBudget, when one is configured), then a moment of the budget's rate. All that waiting is bounded by
MAX_WAIT_SECONDS: beyond it the send raises Throttled and the mail waits in RabbitMQ (deferred), not here. Idle
connections above the governor's limit or the budget's connection share are closed, so a lowered limit frees the
provider's slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import NamedTuple

import aiosmtplib

from . import pipelining
from .budget import SendBudget
from .config import Settings
from .errors import Stage, Throttled, classify
from .metrics import EmailMetrics
from .templates import RenderedEmail
from .throttle import SendGovernor

MAX_WAIT_SECONDS = 3.0  # the longest a mail waits in this process for a slot, the budget or a connection
CONNECTION_POLL_SECONDS = 0.05  # how often a send without a connection lease asks again (within MAX_WAIT_SECONDS)

log = logging.getLogger("email_service.mailer")


class SendResult(NamedTuple):
    waited: float  # seconds spent waiting for a slot, the budget or a connection
    reply: str  # the server's reply to DATA (its code is 250: aiosmtplib raises on any other)


class SmtpPool:
    def __init__(self, settings: Settings, metrics: EmailMetrics, budget: SendBudget | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._size = settings.smtp_pool_size
        self.governor = SendGovernor(self._size, on_change=self._governor_changed)
        self.budget = budget
        self._idle: list[tuple[aiosmtplib.SMTP, str | None]] = []
        self._returned = asyncio.Event()
        self.open_connections = 0
        self.in_use = 0
        metrics.smtp_pool_size.set(self._size)
        metrics.smtp_concurrency_limit.set(self._size)
        # Read when scraped, so sending a mail costs no metric updates.
        metrics.smtp_connections_open.set_function(lambda: self.open_connections)
        metrics.smtp_connections_in_use.set_function(lambda: self.in_use)

    def _client(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password.value if s.smtp_password else None,
            use_tls=s.smtp_security == "tls",
            start_tls=s.smtp_security == "starttls",
            validate_certs=s.smtp_tls_verify,
            cert_bundle=s.smtp_ca_file,
            timeout=s.smtp_timeout,
            local_hostname=s.smtp_helo_hostname,
        )

    async def _connect(self, lease: str | None) -> aiosmtplib.SMTP:
        client = self._client()
        others_open = self.open_connections > 0
        try:
            await client.connect()
        except (ConnectionRefusedError, aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError) as exc:
            await self._release_lease(lease)
            if others_open and not isinstance(exc, aiosmtplib.SMTPResponseException | TimeoutError):
                # refused or closed at the greeting while our other connections work: a connection limit
                raise Throttled(f"connection refused at the greeting: {exc.__class__.__name__}",
                                Stage.CONNECT) from exc
            raise
        except BaseException:
            await self._release_lease(lease)
            raise
        self.open_connections += 1
        return client

    async def _discard(self, client: aiosmtplib.SMTP, lease: str | None) -> None:
        self.open_connections -= 1
        with contextlib.suppress(Exception):
            client.close()
        await self._release_lease(lease)

    async def _release_lease(self, lease: str | None) -> None:
        if lease is not None and self.budget is not None:
            await self.budget.release_connection(lease)

    async def send(self, mail: RenderedEmail) -> SendResult:
        """Send one mail; returns the seconds it waited for a slot, a connection or the budget, and the server's
        reply to DATA. Raises what aiosmtplib raised, or Throttled when that wait would exceed MAX_WAIT_SECONDS."""
        deadline = asyncio.get_running_loop().time() + MAX_WAIT_SECONDS
        async with self.governor.slot(MAX_WAIT_SECONDS):
            try:
                result = await self._send(mail, deadline)
            except Exception as exc:
                failure = classify(exc)
                if isinstance(failure, Throttled) and failure.stage is not None:
                    # the refused connection is already closed and not counted: the others are what it admitted
                    self.governor.throttled(failure, admitted=self.open_connections)
                    self._metrics.smtp_throttled.labels(failure.stage.value).inc()
                raise
            self.governor.accepted()
        return result

    async def _send(self, mail: RenderedEmail, deadline: float) -> SendResult:
        """A connection first, then the budget's moment, then the mail: a moment is reserved only by a sender that
        can use it at once, so a replica still waiting for a connection (one just scaled out) does not pile up
        moments it would then spend all together."""
        client, lease, reused = await self._checkout(deadline, reuse=True)
        try:
            await self._wait_for_budget(deadline)
        except BaseException:
            await self._put_back(client, lease)
            raise
        waited = MAX_WAIT_SECONDS - (deadline - asyncio.get_running_loop().time())
        self.in_use += 1
        try:
            try:
                reply = await self._transmit(client, lease, mail)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                if not reused:
                    raise
                # The server had closed the idle connection: once more on a fresh one (the moment is still ours).
                client, lease, _ = await self._checkout(deadline, reuse=False)
                reply = await self._transmit(client, lease, mail)
        finally:
            self.in_use -= 1
        return SendResult(waited, reply)

    async def _wait_for_budget(self, deadline: float) -> None:
        if self.budget is not None:
            wait = await self.budget.reserve(max(0.0, deadline - asyncio.get_running_loop().time()))
            if wait > 0:
                await asyncio.sleep(wait)

    async def _transmit(self, client: aiosmtplib.SMTP, lease: str | None, mail: RenderedEmail) -> str:
        """Send on `client`: back to the pool after a 250, closed and dropped after any failure; returns the text
        of the server's reply to DATA."""
        try:
            _, reply = await pipelining.sendmail(client, mail.sender, [mail.recipient], mail.data,
                                                 pipelining=self._settings.smtp_pipelining)
        except BaseException:
            await self._discard(client, lease)
            raise
        await self._put_back(client, lease)
        return reply

    async def _checkout(self, deadline: float, *, reuse: bool) -> tuple[aiosmtplib.SMTP, str | None, bool]:
        """An idle connection (when `reuse`) or a new one with its lease; the flag says whether it was reused."""
        while reuse and self._idle:
            client, lease = self._idle.pop()
            if client.is_connected:
                return client, lease, True
            await self._discard(client, lease)
        lease = await self._lease(deadline, reuse=reuse)
        if lease is _REUSED:
            return await self._checkout(deadline, reuse=True)
        return await self._connect(lease), lease, False

    async def _lease(self, deadline: float, *, reuse: bool) -> str | None:
        """A connection lease of the budget (None without a budget), or _REUSED when an idle connection came back
        while waiting for one (and `reuse`). Raises Throttled at the deadline."""
        if self.budget is None:
            return None
        loop = asyncio.get_running_loop()
        while (lease := await self.budget.lease_connection()) is None:
            if reuse and self._idle:
                return _REUSED
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Throttled(f"no SMTP connection slot free within {MAX_WAIT_SECONDS:g}s "
                                f"(deployment cap {self.budget.connections})", None)
            self._returned.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._returned.wait(), min(remaining, CONNECTION_POLL_SECONDS))
        return lease

    async def _put_back(self, client: aiosmtplib.SMTP, lease: str | None) -> None:
        """Keep the connection for the next mail, unless this process holds more than it may."""
        share = self.budget.connection_share if self.budget is not None else None
        if self.open_connections > self.governor.limit or (share is not None and self.open_connections > share):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), timeout=2)
            await self._discard(client, lease)
            return
        self._idle.append((client, lease))
        self._returned.set()

    def _governor_changed(self, governor: SendGovernor) -> None:
        self._metrics.smtp_concurrency_limit.set(governor.limit)
        if self._idle and self.open_connections > governor.limit:
            asyncio.get_running_loop().create_task(self._trim())

    async def _trim(self) -> None:
        """Close idle connections above the governor's limit (a provider counts idle connections too)."""
        while self._idle and self.open_connections > self.governor.limit:
            client, lease = self._idle.pop(0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), timeout=2)
            await self._discard(client, lease)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client, lease in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), timeout=2)
            await self._discard(client, lease)


_REUSED = "reused"  # _lease's answer when an idle connection came back while it waited
