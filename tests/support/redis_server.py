"""Redis for the suites: a key space of one's own on the shared server, or a private redis-server process.

Invariants: a test's keys all start with its own prefix and are deleted afterwards; a private server binds
loopback only, keeps nothing on disk and dies with the test (tests.support.processes).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import redis
import redis.asyncio as aioredis

from .ports import free_port
from .processes import ServiceProcess
from .waits import eventually

SHARED_REDIS_URL = os.environ.get("DEDUP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_IT = "start it (redis-server --daemonize yes) or set DEDUP_TEST_REDIS_URL"


class KeySpace:
    """A unique key prefix on the shared Redis; `clean()` deletes every key under it and checks none is left."""

    def __init__(self, url: str = SHARED_REDIS_URL) -> None:
        self.url = url
        self.prefix = f"wm-test-{uuid.uuid4().hex[:8]}:"
        self._client = redis.Redis.from_url(url)
        try:
            self._client.ping()
        except redis.ConnectionError:
            raise AssertionError(f"Redis does not answer at {url}: {START_IT}") from None

    def env(self) -> dict[str, str]:
        """The email-service settings for duplicate-free delivery in this key space."""
        return {"DEDUP_URL": self.url, "DEDUP_KEY_PREFIX": self.prefix}

    def put(self, key: str, value: str, ttl: int) -> None:
        """Set `key` (under this prefix) as another version of the services would have."""
        self._client.set(f"{self.prefix}{key}", value, ex=ttl)

    def keys(self) -> list[bytes]:
        return list(self._client.scan_iter(f"{self.prefix}*"))

    def clean(self) -> None:
        if keys := self.keys():
            self._client.delete(*keys)
        left = self.keys()
        self._client.close()
        assert not left, f"keys left behind under {self.prefix}: {left[:5]}"


class PrivateRedis:
    """A redis-server of one test only: state no other run can see or touch, and one the test may stop."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = ServiceProcess(
            "redis-server", ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)], {}, workdir / "redis.log")

    async def start(self) -> PrivateRedis:
        if shutil.which("redis-server") is None:
            raise AssertionError("a private redis-server is needed: apt-get install -y redis-server")
        self.process.start()
        await eventually(self.answers, timeout=15, interval=0.05, what="the private redis-server")
        return self

    async def answers(self) -> bool:
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            return bool(await client.ping())
        except (OSError, redis.RedisError):
            return False
        finally:
            await client.aclose()

    def stop(self) -> None:
        self.process.stop(grace=5)
