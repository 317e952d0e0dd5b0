"""The two services inside the test's own event loop: fast to start and inspectable (metrics, publisher state).

For signals, kills and restarts run them as processes instead (tests.support.processes)."""

from __future__ import annotations

import asyncio

import httpx
import uvicorn
from prometheus_client import CollectorRegistry

from email_service.config import Settings as EmailSettings
from email_service.service import EmailService
from producer_service.app import create_app

from .env import producer_settings
from .waits import WaitTimedOut, eventually


class RunningProducer:
    """producer-service served by uvicorn inside the test's event loop, on a real port."""

    def __init__(self, amqp_url: str, port: int, **env: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        settings = producer_settings(amqp_url, http_port=port, **env)
        self.registry = CollectorRegistry()
        self.app = create_app(settings, self.registry)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                lifespan="on", loop="none")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # the test runner owns the signals
        self._task: asyncio.Task | None = None
        self.client = httpx.AsyncClient(base_url=self.url, timeout=10)

    async def __aenter__(self) -> RunningProducer:
        task = self._task = asyncio.create_task(self.server.serve())

        def started() -> bool:
            if task.done():
                raise AssertionError(f"producer on port {self.port} stopped before it started: {task!r}")
            return bool(self.server.started)

        await eventually(started, timeout=10, interval=0.01, what=f"producer started on port {self.port}")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.aclose()
        self.server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout=15)

    @property
    def publisher(self):
        return self.app.state.publisher

    async def wait_ready(self, timeout: float = 10) -> None:
        if not await self.publisher.wait_ready(timeout):
            raise AssertionError(f"producer not ready after {timeout}s")

    async def signup(self, email: str, name: str = "Ada Lovelace", locale: str | None = "en",
                     headers: dict | None = None) -> httpx.Response:
        body = {"email": email, "name": name}
        if locale is not None:
            body["locale"] = locale
        return await self.client.post("/v1/signups", json=body, headers=headers)


class RunningEmailService:
    """email-service inside the test's event loop."""

    def __init__(self, settings: EmailSettings) -> None:
        self.service = EmailService(settings, CollectorRegistry())
        self.metrics = self.service.metrics
        self.url = f"http://127.0.0.1:{settings.metrics_port}"

    async def __aenter__(self) -> RunningEmailService:
        await self.service.start()
        try:
            await eventually(lambda: self.service.consumer.ready, timeout=10, interval=0.01,
                             what="the email-service consumer registered")
        except WaitTimedOut:
            await self.service.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.wait_for(self.service.stop(), timeout=30)

    def count(self, outcome: str) -> float:
        return self.metrics.messages.labels(outcome)._value.get()
