"""Dramatiq peer for the provider-limits section: the typical actor behind Dramatiq's Redis rate limiters, as its
documentation shows them (dramatiq.rate_limits): a WindowRateLimiter for the provider's mails per second and a
ConcurrentRateLimiter for its connection cap, both shared by every worker through Redis.

    BENCH_REDIS_URL=... BENCH_RATE=40 BENCH_CONNECTIONS=8 dramatiq dramatiq_limited -p N

A limiter that is full raises RateLimitExceeded, which Dramatiq's Retries middleware retries with backoff like
any failure (dramatiq#257): retries exhausted, the message goes to `default.XQ`.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.rate_limits import ConcurrentRateLimiter, WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend
from mailtask import send_welcome as _send_welcome

broker = RabbitmqBroker(url=os.environ["BENCH_AMQP_URL"])
dramatiq.set_broker(broker)
backend = RedisBackend(url=os.environ["BENCH_REDIS_URL"])
PREFIX = os.environ.get("BENCH_LIMITER_PREFIX", "bench")
RATE = WindowRateLimiter(backend, f"{PREFIX}-mails", limit=int(float(os.environ["BENCH_RATE"])), window=1)
CONNECTIONS = ConcurrentRateLimiter(backend, f"{PREFIX}-connections", limit=int(os.environ["BENCH_CONNECTIONS"]))


@dramatiq.actor(actor_name="send_welcome", max_retries=3)
def send_welcome(email: str, name: str, locale: str, event_id: str) -> None:
    with RATE.acquire(), CONNECTIONS.acquire():
        _send_welcome(email, name, locale, event_id)
