"""Duplicate-free delivery: the delivery record (status.py) remembers that an event's mail was sent, so a redelivered
or replayed event is acked without a second mail.

Per event, one script on its record (one round trip; before the record existed this took two):
- sent before (`sent_at` set, or a dedup key of the previous version, see below): mark it duplicate_skipped,
  answer DELIVERED: ack, do not send;
- claimed by another consumer (`claim_until` in the future): answer IN_PROGRESS: retry later;
- otherwise claim it (`claim_until` = now + the claim time), mark it `sending`: answer CLAIMED: send.
Then the send, and one write: `sent` (with `sent_at`) or a failed state; both drop the claim. The claim makes two
consumers that got the same event at the same moment (a client's retried POST with the same Idempotency-Key) send
one mail: the second one sees the claim and retries later, by when the first has recorded the delivery. A claim is
only won after the previous holder dropped it, which it does when it writes `sent`, so a winner always sees it.

Without dedup (DEDUP_ENABLED=false) the same script only marks the record `sending` and always answers CLAIMED.

Keys of the previous version stay readable for their TTL (DEDUP_TTL_SECONDS): `{prefix}delivered:{id}` counts as
sent before and `{prefix}inflight:{id}` as claimed, for the event id and for the id the producer derived from the
same Idempotency-Key before it used a secret (the x-legacy-event-id header), so a client's retry across the
upgrade still gives one mail.

What remains: a crash between the SMTP server's acceptance and the `sent` write (one Redis round trip, well under a
millisecond on a local network) sends the mail again on redelivery.
"""

from __future__ import annotations

import enum


class Claim(enum.Enum):
    CLAIMED = "claimed"  # send it
    DELIVERED = "delivered"  # sent before: ack, do not send
    IN_PROGRESS = "in_progress"  # another consumer is sending it right now: retry later
    UNCHECKED = "unchecked"  # the store is down and the fail mode is open: send without a guarantee


def legacy_keys(prefix: str, event_id: str, legacy_event_id: str | None) -> list[str]:
    """The previous version's dedup keys that still count: delivered and inflight, for the id and its legacy id."""
    ids = [event_id] if legacy_event_id in (None, event_id) else [event_id, legacy_event_id]
    return [f"{prefix}{kind}:{i}" for i in ids for kind in ("delivered", "inflight")]


# KEYS[1] the record, KEYS[2..] legacy_keys() pairs (delivered, inflight).
# ARGV: now (ms), now (RFC 3339), claim (ms), record TTL (s), locale, attempt, dedup (1/0)
CLAIM_SCRIPT = """
local record = KEYS[1]
if ARGV[7] == '1' then
  local delivered = redis.call('HEXISTS', record, 'sent_at') == 1
  local claimed = tonumber(redis.call('HGET', record, 'claim_until') or '0') > tonumber(ARGV[1])
  for i = 2, #KEYS, 2 do
    if redis.call('EXISTS', KEYS[i]) == 1 then delivered = true end
    if redis.call('EXISTS', KEYS[i + 1]) == 1 then claimed = true end
  end
  if delivered then
    redis.call('HSET', record, 'status', 'duplicate_skipped', 'last_update', ARGV[2])
    redis.call('HSETNX', record, 'first_update', ARGV[2])
    redis.call('EXPIRE', record, ARGV[4])
    return 'delivered'
  end
  if claimed then return 'in_progress' end
  redis.call('HSET', record, 'claim_until', tonumber(ARGV[1]) + tonumber(ARGV[3]))
end
redis.call('HSET', record, 'status', 'sending', 'last_update', ARGV[2], 'locale', ARGV[5], 'attempts', ARGV[6])
redis.call('HSETNX', record, 'first_update', ARGV[2])
redis.call('EXPIRE', record, ARGV[4])
return 'claimed'
"""
