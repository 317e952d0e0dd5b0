"""Celery peer: RabbitMQ broker, prefork pool, acks_late, one task that sends the welcome mail with smtplib.

    celery -A celery_worker worker -P prefork -c N --without-gossip --without-mingle --without-heartbeat

Broker URL from BENCH_AMQP_URL. Everything else is Celery's default (prefetch multiplier 4, JSON, the
default classic queue `celery`).
"""

from __future__ import annotations

import os

from celery import Celery
from mailtask import send_welcome as _send_welcome

app = Celery("bench", broker=os.environ["BENCH_AMQP_URL"])
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
    # The producer-side comparison (celery_app.py) waits for the broker's confirm like producer-service does.
    broker_transport_options={"confirm_publish": True},
)


@app.task(name="bench.send_welcome")
def send_welcome(email: str, name: str, locale: str, event_id: str) -> None:
    _send_welcome(email, name, locale, event_id)
