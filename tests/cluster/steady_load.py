"""The scenario's signup stream: open loop at the plan's rate from `start()` until `stop()`, through the shared
load client (one Idempotency-Key per signup, a 503 or a dropped connection retried after Retry-After, a bounded
number of times); every `bounce_every`-th recipient is refused by the SMTP server (550).

Invariant: `stop()` returns once every signup started has its end (a 202, or the client gave up), so what the
scenario judges afterwards is final; `abandon()` (the teardown after a failure) cancels what is still retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from tests.support.load import Signup, SignupLoad
from tests.support.smtp_server import SmtpTestServer
from tests.support.waits import eventually

from .kill_cycle import Plan

CLIENT_MAX_ATTEMPTS = 30        # the load client's retries of one signup
CLIENT_MAX_SECONDS = 90         # ... and its time budget for one signup
CLIENT_CONNECTIONS = 200


class SteadyLoad:
    def __init__(self, producer_url: str, plan: Plan, smtp: SmtpTestServer) -> None:
        self.smtp = smtp

        def refuse_bounces(signup: Signup) -> None:
            if signup.refused:
                smtp.reject_recipient(signup.email, "550 5.1.1 no such user")

        self.load = SignupLoad(producer_url, run_id=f"failover-{uuid.uuid4().hex[:6]}", rate=plan.rate,
                               concurrency=CLIENT_CONNECTIONS, max_attempts=CLIENT_MAX_ATTEMPTS,
                               max_seconds=CLIENT_MAX_SECONDS, refused_every=plan.bounce_every,
                               on_signup=refuse_bounces)
        self.plan = plan
        self.started_at = 0.0
        self.seconds = 0.0              # from start() until stop() was called
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the stream and return once mails flow and the plan's warm-up has passed."""
        self.started_at = time.monotonic()
        self._task = asyncio.create_task(self.load.run(self._stop))
        await eventually(lambda: len(self.smtp.accepted_since(self.started_at)) >= 5, timeout=30, interval=0.05,
                         what="mails flowing before the kill")
        await asyncio.sleep(max(0.0, self.plan.warmup_seconds - (time.monotonic() - self.started_at)))

    async def stop(self) -> None:
        self.seconds = time.monotonic() - self.started_at
        self._stop.set()
        if self._task is not None:
            await self._task

    async def abandon(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(self._task, return_exceptions=True)
