"""producer_service.ids: the event and request ids drawn from a pool of os.urandom bytes."""

from __future__ import annotations

import re
import uuid

from producer_service import ids


def test_event_ids_are_canonical_version_4_uuids():
    for _ in range(3 * ids.POOL_BYTES // 16):  # past several refills of the pool
        text = ids.random_uuid4()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_no_id_repeats_across_refills_of_the_pool():
    drawn = [ids.random_hex() for _ in range(5 * ids.POOL_BYTES // 16)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", one) for one in drawn)
    assert len(set(drawn)) == len(drawn)
