"""Events: the envelope every service speaks, the payload schemas and who listens."""

from shared.events import community as _community  # noqa: F401  (and the community's)
from shared.events import supply as _supply  # noqa: F401  (registers the supply events)
from shared.events.envelope import Event, EventError, new_event, new_events
from shared.events.registry import REGISTRY, subscribers_of

__all__ = [
    "REGISTRY",
    "Event",
    "EventError",
    "new_event",
    "new_events",
    "subscribers_of",
]
