"""Run the two services for tests: in-process (fast, inspectable) or as real processes (signals, kills)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import uvicorn
from prometheus_client import CollectorRegistry

from email_service.config import Settings as EmailSettings
from email_service.service import EmailService
from producer_service.app import create_app
from producer_service.config import Settings as ProducerSettings

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


class RunningProducer:
    """producer-service served by uvicorn inside the test's event loop, on a real port."""

    def __init__(self, amqp_url: str, port: int, **env: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        settings = ProducerSettings.from_env({"AMQP_URL": amqp_url, "HTTP_PORT": str(port), **env})
        self.registry = CollectorRegistry()
        self.app = create_app(settings, self.registry)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                lifespan="on", loop="none")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # the test runner owns the signals
        self._task: asyncio.Task | None = None
        self.client = httpx.AsyncClient(base_url=self.url, timeout=10)

    async def __aenter__(self) -> RunningProducer:
        self._task = asyncio.create_task(self.server.serve())
        deadline = time.monotonic() + 10
        while not self.server.started:
            if self._task.done() or time.monotonic() > deadline:
                raise RuntimeError(f"producer did not start on port {self.port}")
            await asyncio.sleep(0.01)
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


def email_settings(amqp_url: str, smtp_port: int, metrics_port: int, **env: str) -> EmailSettings:
    base = {
        "AMQP_URL": amqp_url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_SECURITY": "none",
        "MAIL_FROM": "Acme <welcome@acme.test>",
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": str(metrics_port),
        "RETRY_DELAYS": "0.2,0.4,0.8",
        "MAX_ATTEMPTS": "4",
        "SHUTDOWN_TIMEOUT_SECONDS": "10",
        "RECONNECT_MAX_DELAY_SECONDS": "0.5",
    }
    base.update(env)
    return EmailSettings.from_env(base)


class RunningEmailService:
    """email-service inside the test's event loop."""

    def __init__(self, settings: EmailSettings, dedup=None) -> None:
        self.service = EmailService(settings, CollectorRegistry(), dedup=dedup)
        self.metrics = self.service.metrics
        self.url = f"http://127.0.0.1:{settings.metrics_port}"

    async def __aenter__(self) -> RunningEmailService:
        await self.service.start()
        deadline = time.monotonic() + 10
        while not self.service.consumer.ready:
            if time.monotonic() > deadline:
                await self.service.stop()
                raise AssertionError("email-service consumer did not register within 10s")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.wait_for(self.service.stop(), timeout=30)

    def count(self, outcome: str) -> float:
        return self.metrics.messages.labels(outcome)._value.get()


class ServiceProcess:
    """A service as a real OS process, for signals and kills. Output goes to a log file for post-mortems."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(Exception):
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def email_process(settings_env: dict[str, str], log_path: Path) -> ServiceProcess:
    return ServiceProcess([str(VENV_BIN / "email-service"), "run"], settings_env, log_path)


def producer_process(env: dict[str, str], log_path: Path) -> ServiceProcess:
    return ServiceProcess([str(VENV_BIN / "producer-service")], env, log_path)
