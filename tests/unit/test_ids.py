"""Random UUIDs in bulk (shared.ids)."""

from __future__ import annotations

import uuid

import pytest

from shared.events import new_events
from shared.ids import uuid4s


def test_uuid4s_are_random_version_4_uuids_each_different() -> None:
    ids = uuid4s(1000)
    assert len(ids) == 1000 and len(set(ids)) == 1000
    assert {u.version for u in ids} == {4}
    assert {u.variant for u in ids} == {uuid.RFC_4122}
    # As uuid.uuid4's: each reads as itself again.
    assert all(uuid.UUID(str(u)) == u for u in ids)
    assert uuid4s(0) == []
    with pytest.raises(ValueError, match="negative"):
        uuid4s(-1)


def test_events_of_one_change_share_a_story_and_have_ids_and_times_of_their_own() -> None:
    payload = {
        "allocation_id": str(uuid.uuid4()),
        "pledge_line_id": str(uuid.uuid4()),
        "reason": "withdrawn by the donor",
    }
    events = new_events(
        "allocation.cancelled",
        [dict(payload), dict(payload), dict(payload)],
        producer="donations",
        aggregate_ids=["a", "b", "c"],
        aggregate_version=2,
    )
    assert len({e.id for e in events}) == 3 and {e.id.version for e in events} == {4}
    times = [e.occurred_at for e in events]
    assert times == sorted(times)
    assert len({e.correlation_id for e in events}) == 1
    assert [e.aggregate_id for e in events] == ["a", "b", "c"]
