"""The delivery record from the outside: the settings that turn it on, and reading it through the producer's
GET /v1/signups/{event_id} the way support would (with the bearer token)."""

from __future__ import annotations

import asyncio
import os

import httpx

from .processes import VENV_BIN
from .waits import WaitTimedOut, eventually

STATUS_TOKEN = "test-status-token-0123456789abcdef"
IDEMPOTENCY_SECRET = "test-idempotency-secret-0123456789"
AUTH = {"Authorization": f"Bearer {STATUS_TOKEN}"}


def email_status_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """email-service settings that write the records to `redis_url` under `prefix`."""
    return {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, **extra}


def producer_status_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """producer-service settings for the `queued` write and the lookup route (token and HMAC secret set)."""
    return {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "STATUS_API_TOKEN": STATUS_TOKEN,
            "IDEMPOTENCY_SECRET": IDEMPOTENCY_SECRET, **extra}


async def lookup(client: httpx.AsyncClient, event_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.get(f"/v1/signups/{event_id}", headers=AUTH if headers is None else headers)


async def wait_for_status(client: httpx.AsyncClient, event_id: str, status: str, timeout: float = 15,
                          **fields: object) -> dict:
    """The record once its status is `status` (and the given fields have these values); fails after `timeout`."""
    seen: dict = {}

    async def reached() -> bool:
        nonlocal seen
        response = await lookup(client, event_id)
        seen = response.json() if response.status_code == 200 else {"http": response.status_code}
        return seen.get("status") == status and all(seen.get(k) == v for k, v in fields.items())

    try:
        await eventually(reached, timeout=timeout, interval=0.05, what=f"record of {event_id} to be {status}")
    except WaitTimedOut as exc:
        raise AssertionError(f"{exc} {fields or ''}; last seen: {seen}") from None
    return seen


async def email_cli(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run `email-service ARGS` as a process without blocking the test's event loop (in-process services keep
    running); returns exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(str(VENV_BIN / "email-service"), *args, env={**os.environ, **env},
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"email-service {' '.join(args)} did not end within {timeout}s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
