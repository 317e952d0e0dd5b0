"""The one bounded wait of the test suites: poll a condition until it holds or the time is up.

Invariant: every wait has a deadline and, when it passes, fails naming what did not happen; nothing waits by
sleeping a fixed time and hoping.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

import pytest

Check = Callable[[], Awaitable[bool] | bool]


async def eventually(check: Check, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> None:
    """Wait until `check()` (plain or async) is true; fail the test after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        await asyncio.sleep(interval)


def eventually_sync(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02,
                    what: str = "condition") -> None:
    """`eventually` for code outside an event loop (fixtures that start processes, the cluster tool's callers)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(interval)
