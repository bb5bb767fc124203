"""Anonymous donors stay anonymous outside coordinators.

A donor who pledged anonymously is known to itself and to coordinators. Everyone
else who hears of its goods (the recipient, the logistics company, their webhooks)
hears of them without anything that names the donor: its organisation's id, and the
ids of its pledge and pledge lines, which would name it once joined with another
answer. Where the goods leave from is the pickup of the logistics company assigned to
carry them; the recipient sees only the region.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

# Fields that name the donor, at any depth of an answer or an event's payload: its
# organisation, its pledge and pledge lines, and a reservation's view of the donor's
# line (whose id is the pledge line's, and whose figures are the donor's stock).
DONOR_FIELDS = frozenset(
    {"donor_org_id", "donor_name", "pledge_id", "pledge_line_id", "line", "available"}
)


def donor_hidden(
    *,
    anonymous: bool,
    donor_org_id: uuid.UUID | str | None,
    viewer_org_id: uuid.UUID | str | None,
    viewer_is_coordinator: bool,
) -> bool:
    """Must the donor be left out of what this viewer is shown?"""
    if not anonymous or viewer_is_coordinator:
        return False
    return viewer_org_id is None or str(viewer_org_id) != str(donor_org_id)


def without_donor(value: Any) -> Any:
    """``value`` (a dict, list or scalar, as dumped to JSON) with every field that names
    the donor set to None."""
    if isinstance(value, Mapping):
        return {
            key: (None if key in DONOR_FIELDS else without_donor(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [without_donor(item) for item in value]
    return value


def origin_for(origin: Mapping[str, Any] | None, *, carries_it: bool) -> dict[str, Any]:
    """Where anonymous goods leave from, as a viewer may see it: all of it for the
    logistics company that picks them up, the region for anyone else."""
    origin = dict(origin or {})
    if carries_it:
        return origin
    return {"region": origin.get("region")}
