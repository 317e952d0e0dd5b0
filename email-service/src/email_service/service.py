"""Assembles the email service from its parts and runs it until asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from .budget import SendBudget
from .config import Settings
from .consumer import EmailConsumer
from .envvars import redact_url
from .handler import MessageHandler
from .health import HealthServer
from .mailer import SmtpPool
from .metrics import EmailMetrics
from .retry import RetryPolicy
from .status import DeliveryRecords
from .template_files import LocaleFiles
from .templates import welcome_email

log = logging.getLogger("email_service")


class EmailService:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None,
                 records: DeliveryRecords | None = None, templates: Mapping[str, LocaleFiles] | None = None) -> None:
        self.settings = settings
        self.metrics = EmailMetrics(registry or CollectorRegistry())
        self.policy = RetryPolicy(max_attempts=settings.max_attempts, delays=settings.retry_delays,
                                  defer_delay=settings.throttle_delay, deadline_seconds=settings.delivery_deadline)
        self.budget = _send_budget(settings, self.metrics)
        self.pool = SmtpPool(settings, self.metrics, self.budget)
        self.renderer = welcome_email(settings, templates, on_fallback=self.metrics.template_fallbacks.inc)
        if records is None and settings.redis_url is not None:
            records = DeliveryRecords.from_settings(settings, on_write_failure=self.metrics.status_write_failures.inc)
        self.handler = MessageHandler(self.renderer, self.pool, self.policy, self.metrics, records=records)
        self.consumer = EmailConsumer(settings, self.handler, self.policy, self.metrics, self.pool.governor)
        self.health = HealthServer(settings.metrics_host, settings.metrics_port, self.metrics.registry,
                                   lambda: self.consumer.ready)
        self.stop_event = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.health.start()
        if self.budget is not None:
            await self.budget.start()
        log.info("starting", extra={
            "amqp": redact_url(self.settings.amqp_url.value),
            "smtp": f"{self.settings.smtp_host}:{self.settings.smtp_port}",
            "smtp_security": self.settings.smtp_security, "concurrency": self.settings.concurrency,
            "metrics_port": self.health.port})
        self._task = asyncio.create_task(self.consumer.run(self.stop_event), name="consumer")

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        self.stop_event.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pool.close()
        if self.budget is not None:
            await self.budget.close()
        if self.handler.records is not None:
            await self.handler.records.close()
        await self.health.stop()
        log.info("stopped")


def _send_budget(settings: Settings, metrics: EmailMetrics) -> SendBudget | None:
    """The deployment-wide budget when one is configured (config.py makes sure REDIS_URL is set then)."""
    metrics.budget_rate.set(settings.send_rate_limit or 0)
    metrics.budget_connections.set(settings.smtp_max_connections or 0)
    if not settings.has_send_budget or settings.redis_url is None:
        metrics.budget_shared.set(0)
        return None
    budget = SendBudget.from_url(settings.redis_url.value, rate=settings.send_rate_limit,
                                 connections=settings.smtp_max_connections, prefix=settings.redis_key_prefix)
    metrics.budget_shared.set_function(lambda: 1 if budget.shared else 0)
    return budget
