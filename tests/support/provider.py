"""A mail provider with limits: the SMTP test server with a global send rate and a connection cap, answering as
Amazon SES, Google's SMTP relay, Microsoft 365 or a relay (Postfix-like) do when a sender goes past them.

    provider = ThrottlingSmtpServer(free_port(), rate=40, max_connections=8, personality=SES); provider.start()
    ... run email-service processes against provider.port ...
    provider.max_open_connections <= 8          # what clients opened at once (refused ones included)
    provider.throttled                          # Counter: stage ("connect", "mail", "rcpt", "data") -> replies
    provider.throttled_share()                  # throttling replies / mails accepted
    provider.max_rate(5.0)                      # highest mails/s over any 5-s window of acceptances
    provider.throttle_log                       # (monotonic time, stage, reply) of every throttling reply

It is an `SmtpTestServer` (tests/support/smtp_server.py), built only on that server's hooks: a greeting rule
admits or refuses each connection, a command rule answers MAIL/RCPT, a reply rule answers the end of DATA.

Personalities (replies as the providers send them; where a provider documents no connection cap reply, the
one here is its general "try again later"):
- SES: over the rate `454 4.7.0 Throttling failure: Maximum sending rate exceeded.` at the end of DATA; over the
  cap `421 4.7.0 Too many concurrent SMTP connections, try again later` at the greeting, then closed.
- GOOGLE: over the rate `450 4.2.1 Peak SMTP relay limit exceeded` at RCPT; over the cap
  `421 4.7.0 Try again later, closing connection.` at the greeting, then closed.
- MICROSOFT (cap 3 unless given): over the cap `432 4.3.2 Concurrent connections limit exceeded.` at MAIL (after
  the greeting and EHLO, as SMTP AUTH answers it); over the rate
  `432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded` at the end of DATA.
- RELAY (as Postfix's anvil): over the cap `421 4.7.0 Too many connections` at the greeting, then closed; over the
  rate `450 4.7.1 Error: too much mail from 127.0.0.1` at MAIL.

Invariants:
- the rate is global: one token bucket (`rate` tokens/s, `burst` deep, full at start) shared by every connection;
  a mail takes one token at its personality's stage, and a mail that finds none gets the rate reply. So over any
  window of T seconds the server accepts at most burst + rate x T mails, whatever the number of connections;
- the cap is global: at most `max_connections` admitted connections are open at once; a connection is admitted or
  not when it is made (a refused one stays refused: SES, Google and the relay close it at the greeting, Microsoft
  answers its MAIL) and its slot frees when it closes;
- every throttling reply is counted by stage exactly once; a mail is recorded (`mails`) only when accepted.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from aiosmtpd.smtp import Envelope

from .smtp_server import Connection, SmtpTestServer

STAGES = ("connect", "helo", "mail", "rcpt", "data")  # as the email-service's email_smtp_throttled_total{stage}


@dataclass(frozen=True)
class Personality:
    name: str
    rate_stage: str  # "mail", "rcpt" or "data": where a mail over the rate is answered
    rate_reply: str
    cap_stage: str  # "connect" (refused at the greeting, then closed) or "mail"
    cap_reply: str
    default_cap: int | None = None  # the provider's own connection cap when none is given


SES = Personality("ses", "data", "454 4.7.0 Throttling failure: Maximum sending rate exceeded.",
                  "connect", "421 4.7.0 Too many concurrent SMTP connections, try again later")
GOOGLE = Personality("google", "rcpt", "450 4.2.1 Peak SMTP relay limit exceeded",
                     "connect", "421 4.7.0 Try again later, closing connection.")
MICROSOFT = Personality("microsoft", "data", "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
                        "mail", "432 4.3.2 Concurrent connections limit exceeded.", default_cap=3)
RELAY = Personality("relay", "mail", "450 4.7.1 Error: too much mail from 127.0.0.1",
                    "connect", "421 4.7.0 Too many connections")
PERSONALITIES = {p.name: p for p in (SES, GOOGLE, MICROSOFT, RELAY)}


class TokenBucket:
    """`rate` tokens a second into a bucket `burst` deep, full at the start; `take()` answers whether one was left."""

    def __init__(self, rate: float, burst: float) -> None:
        assert rate > 0 and burst >= 1, "a rate > 0 and a bucket at least one token deep"
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class ThrottlingSmtpServer(SmtpTestServer):
    """An SmtpTestServer with a global rate (mails/s; None: none) and a global connection cap (None: the
    personality's own cap, if it has one)."""

    def __init__(self, port: int, *, rate: float | None, max_connections: int | None = None,
                 personality: Personality = RELAY, burst: float | None = None) -> None:
        super().__init__(port)
        self.personality = personality
        self.rate = rate
        self.cap = max_connections if max_connections is not None else personality.default_cap
        self.bucket = TokenBucket(rate, burst if burst is not None else max(1.0, rate)) if rate else None
        self.throttled: Counter[str] = Counter({stage: 0 for stage in STAGES})
        self.throttle_log: list[tuple[float, str, str]] = []
        self.admitted: set[int] = set()  # indices of the admitted connections still open
        self.greeting_rules.append(self._admit)
        self.command_rules.append(self._command)
        self.rules.append(self._data)

    # -- the rules (run under the server's lock)

    def _throttle(self, stage: str, reply: str) -> str:
        self.throttled[stage] += 1
        self.throttle_log.append((time.monotonic(), stage, reply))
        return reply

    def _admit(self, server: SmtpTestServer, conn: Connection) -> str | None:
        if self.cap is None:
            self.admitted.add(conn.index)
            return None
        self.admitted = {i for i in self.admitted if self.connections[i].open}
        if len(self.admitted) < self.cap:
            self.admitted.add(conn.index)
            return None
        if self.personality.cap_stage == "connect":
            return self._throttle("connect", self.personality.cap_reply)
        return None  # refused later, at its stage

    def _rate_limited(self, stage: str) -> str | None:
        if self.bucket is None or stage != self.personality.rate_stage or self.bucket.take(time.monotonic()):
            return None
        return self._throttle(stage, self.personality.rate_reply)

    def _command(self, server: SmtpTestServer, stage: str, conn: Connection) -> str | None:
        if stage == self.personality.cap_stage and conn.index not in self.admitted:
            return self._throttle(stage, self.personality.cap_reply)
        return self._rate_limited(stage)

    def _data(self, server: SmtpTestServer, envelope: Envelope) -> str | None:
        return self._rate_limited("data")

    # -- what the provider saw

    def throttling_replies(self) -> int:
        with self.lock:
            return sum(self.throttled.values())

    def throttled_share(self) -> float:
        """Throttling replies per mail accepted (0 when none was accepted and none throttled)."""
        with self.lock:
            replies, accepted = sum(self.throttled.values()), len(self.mails)
        return replies / accepted if accepted else float(replies > 0)

    def acceptance_times(self) -> list[float]:
        return sorted(mail.at for mail in self.received())

    def max_in_window(self, window: float) -> int:
        """The most mails accepted within any `window` seconds."""
        times, best, start = self.acceptance_times(), 0, 0
        for end, at in enumerate(times):
            while at - times[start] > window:
                start += 1
            best = max(best, end - start + 1)
        return best

    def max_rate(self, window: float = 5.0) -> float:
        return self.max_in_window(window) / window

    def window_rates(self, window: float = 5.0) -> list[float]:
        """Mails/s in consecutive `window`-second windows from the first acceptance to the last (the last,
        partial window left out)."""
        times = self.acceptance_times()
        if not times:
            return []
        counts = Counter(int((at - times[0]) // window) for at in times)
        full = int((times[-1] - times[0]) // window)
        return [counts.get(i, 0) / window for i in range(full)]
