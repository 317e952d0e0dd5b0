"""Celery peer for the provider-limits section: the typical task with `rate_limit` set as Celery's users do it
(the provider's limit divided by the number of worker nodes: Celery's rate limit holds per worker node, not
across them) and retries on SMTP errors with Celery's exponential backoff.

    BENCH_RATE_LIMIT=10/s celery -A celery_limited worker -P prefork -c 1 -n NAME@%h   (one per node)

A task that fails for good (retries exhausted) appends its id to BENCH_FAILURES_FILE: Celery acks it and it is
gone, the peer's equivalent of a dead letter.
"""

from __future__ import annotations

import os
import smtplib

from celery import Celery, signals
from mailtask import send_welcome as _send_welcome

app = Celery("bench-limited", broker=os.environ["BENCH_AMQP_URL"])
app.conf.update(task_acks_late=True, task_ignore_result=True, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=True)


@app.task(name="bench.send_welcome", rate_limit=os.environ["BENCH_RATE_LIMIT"],
          autoretry_for=(smtplib.SMTPException, OSError), retry_backoff=True, max_retries=3)
def send_welcome(email: str, name: str, locale: str, event_id: str) -> None:
    _send_welcome(email, name, locale, event_id)


@signals.task_failure.connect
def record_failure(task_id: str | None = None, **_: object) -> None:
    with open(os.environ["BENCH_FAILURES_FILE"], "a") as out:  # O_APPEND: one whole line per write
        out.write(f"{task_id}\n")
