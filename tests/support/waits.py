"""The one bounded wait of the test suites: poll a condition until it holds or the time is up.

Invariant: every wait has a deadline and, when it passes, raises `WaitTimedOut` naming what did not happen; nothing
waits by sleeping a fixed time and hoping. `WaitTimedOut` is an AssertionError, so pytest reports it as a failed
check, and code outside pytest (the benchmarks, the cluster tool's callers) can use the same waits.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Check = Callable[[], Awaitable[bool] | bool]


class WaitTimedOut(AssertionError):
    """A bounded wait ran out of time; the message names what did not happen."""


async def eventually(check: Check, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> None:
    """Wait until `check()` (plain or async) is true; raise WaitTimedOut after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def eventually_sync(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02,
                    what: str = "condition") -> None:
    """`eventually` for code outside an event loop (fixtures that start processes, the cluster tool's callers)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def within(check: Check, timeout: float, interval: float = 0.2) -> bool:
    """Like `eventually`, but answers whether `check()` held in time instead of raising: for a report that lists
    every broken promise rather than stopping at the first."""
    try:
        await eventually(check, timeout=timeout, interval=interval)
    except WaitTimedOut:
        return False
    return True
