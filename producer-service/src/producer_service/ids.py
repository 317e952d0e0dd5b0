"""Random ids: the event id of a signup without an Idempotency-Key (a UUID, version 4) and the request id of a
request that brought none (32 hex digits).

Both come from os.urandom, drawn POOL_BYTES at a time: one getrandom() call per 256 ids instead of one per id (under
load on a virtual machine, that call alone took about 8 us of a signup's CPU, measured with py-spy). The bytes
are as unpredictable as os.urandom's; each byte is handed out once.

Invariant: called from the event loop's thread only (the pool is not locked).
"""

from __future__ import annotations

import os

POOL_BYTES = 4096
_pool = b""
_at = 0


def _random16() -> bytes:
    global _pool, _at
    if _at + 16 > len(_pool):
        _pool, _at = os.urandom(POOL_BYTES), 0
    chunk = _pool[_at:_at + 16]
    _at += 16
    return chunk


def random_hex() -> str:
    """32 random hex digits (as uuid.uuid4().hex, without the version digit fixed)."""
    return _random16().hex()


def random_uuid4() -> str:
    """str(uuid.uuid4()), without building a UUID object: version 4, variant RFC 9562, hyphenated lower hex."""
    raw = bytearray(_random16())
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
