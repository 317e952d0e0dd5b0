"""A small pool of reused SMTP connections (aiosmtplib).

Opening a connection (and TLS, and AUTH) per mail costs more than the mail itself, so connections are kept and
reused. A connection that failed in any way is closed and dropped, never reused; the pool opens a fresh one.
A reused connection the server had quietly closed (idle timeout) gets one immediate second try on a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiosmtplib

from .config import Settings
from .metrics import EmailMetrics
from .templates import RenderedEmail

log = logging.getLogger("email_service.mailer")


class SmtpPool:
    def __init__(self, settings: Settings, metrics: EmailMetrics) -> None:
        self._settings = settings
        self._size = settings.smtp_pool_size
        self._slots = asyncio.Semaphore(self._size)
        self._idle: list[aiosmtplib.SMTP] = []
        self.open_connections = 0
        self.in_use = 0
        metrics.smtp_pool_size.set(self._size)
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

    async def _connect(self) -> aiosmtplib.SMTP:
        client = self._client()
        await client.connect()
        self.open_connections += 1
        return client

    async def _discard(self, client: aiosmtplib.SMTP) -> None:
        self.open_connections -= 1
        with contextlib.suppress(Exception):
            client.close()

    async def send(self, mail: RenderedEmail) -> None:
        """Send one mail. Raises what aiosmtplib raised."""
        async with self._slots:
            self.in_use += 1
            try:
                await self._send_on_pooled(mail)
            finally:
                self.in_use -= 1

    async def _send_on_pooled(self, mail: RenderedEmail) -> None:
        while self._idle:
            client = self._idle.pop()
            if not client.is_connected:
                await self._discard(client)
                continue
            try:
                await client.sendmail(mail.sender, [mail.recipient], mail.data)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                # The server closed an idle connection; try once more on a fresh one below.
                await self._discard(client)
                break
            except BaseException:
                await self._discard(client)
                raise
            self._idle.append(client)
            return
        client = await self._connect()
        try:
            await client.sendmail(mail.sender, [mail.recipient], mail.data)
        except BaseException:
            await self._discard(client)
            raise
        self._idle.append(client)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), timeout=2)
            await self._discard(client)
