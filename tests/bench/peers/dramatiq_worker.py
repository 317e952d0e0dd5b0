"""Dramatiq peer: RabbitMQ broker, default threads (8 per process), one actor that sends the welcome mail with
smtplib.

    dramatiq dramatiq_worker -p N

Broker URL from BENCH_AMQP_URL; queue `default` as Dramatiq declares it.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from mailtask import send_welcome as _send_welcome

broker = RabbitmqBroker(url=os.environ["BENCH_AMQP_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="send_welcome", max_retries=3)
def send_welcome(email: str, name: str, locale: str, event_id: str) -> None:
    _send_welcome(email, name, locale, event_id)
