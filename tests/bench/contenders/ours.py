"""Ours: `email-service run` as a consumer and `producer-service` as the app, from .venv, configured through
tests/support/env.py (the settings every suite uses) with the benchmark's overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.support.env import email_env, producer_env
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess

from ..messages import MAIL_FROM, our_events
from ..paths import SERVICES_BIN
from ..testbed import http_status
from .base import until_up

if TYPE_CHECKING:
    from ..broker import Broker
    from ..testbed import Testbed


@dataclass(frozen=True)
class EmailService:
    log_level: str = "info"
    concurrency: int = 16
    pool_size: int | None = None  # SMTP_POOL_SIZE; None: the service's default (= CONCURRENCY)
    queue: str = "email.welcome"
    overrides: dict[str, str | None] = field(default_factory=dict)  # None: drop the test default, use the service's
    name: str = ""  # the key in the results; "": ours-<log level>

    @property
    def key(self) -> str:
        return self.name or f"ours-{self.log_level}"

    def consumers_registered(self, processes: int) -> int:
        return processes

    def publish(self, broker: Broker, n: int) -> None:
        broker.publish("signups", "user.signed_up", our_events(n))

    def start(self, bed: Testbed, processes: int, smtp_port: int) -> list[ServiceProcess]:
        return [self.start_one(bed, smtp_port)[0] for _ in range(processes)]

    def start_one(self, bed: Testbed, smtp_port: int, amqp_url: str | None = None) -> tuple[ServiceProcess, int]:
        """One process (on the main vhost unless `amqp_url`); returns it and its metrics port."""
        assert bed.broker is not None, "testbed not opened"
        metrics_port = free_port()
        pool = {} if self.pool_size is None else {"SMTP_POOL_SIZE": self.pool_size}
        env = email_env(amqp_url or bed.broker.url, smtp_port, metrics_port=metrics_port,
                        CONCURRENCY=self.concurrency, LOG_LEVEL=self.log_level, MAIL_FROM=MAIL_FROM,
                        SHUTDOWN_TIMEOUT_SECONDS=5, **pool)
        for name, value in self.overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return bed.processes.start("email-service", [str(SERVICES_BIN / "email-service"), "run"], env), metrics_port


@dataclass(frozen=True)
class ProducerService:
    key: str = "ours"

    def start(self, bed: Testbed) -> tuple[ServiceProcess, int]:
        assert bed.broker is not None, "testbed not opened"
        port = free_port()
        proc = bed.processes.start("producer-service", [str(SERVICES_BIN / "producer-service")],
                                   producer_env(bed.broker.url, http_port=port, LOG_LEVEL="INFO"))
        until_up(bed, proc, lambda: http_status(f"http://127.0.0.1:{port}/readyz")[0] == 200,
                 f"producer-service ready on :{port}")
        return proc, port
