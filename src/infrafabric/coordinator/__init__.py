"""The coordinator: a dependency-aware task board on the bus, atomic claims
with leases, push delivery and blocker escalation.

:class:`IFCoordinator` alone is the *bare* board (open policy, nothing
witnessed); applications open the whole fleet with
:func:`infrafabric.open_fleet`, whose coordinator has the governor as its
:class:`ClaimPolicy` and the witness observing.
"""

from __future__ import annotations

from infrafabric.coordinator.core import (
    DEFAULT_LEASE_TTL,
    ClaimOutcome,
    EmptyHand,
    Feed,
    IFCoordinator,
    LostClaim,
    Observer,
)
from infrafabric.coordinator.models import (
    Presence,
    SwarmRecord,
    Task,
    TaskEvent,
    TaskKind,
    TaskSpec,
    TaskStatus,
    Transition,
    coverage,
)
from infrafabric.coordinator.policy import ClaimPolicy
from infrafabric.coordinator.presence import Liveness

__all__ = [
    "DEFAULT_LEASE_TTL",
    "ClaimOutcome",
    "ClaimPolicy",
    "EmptyHand",
    "Feed",
    "IFCoordinator",
    "Liveness",
    "LostClaim",
    "Observer",
    "Presence",
    "SwarmRecord",
    "Task",
    "TaskEvent",
    "TaskKind",
    "TaskSpec",
    "TaskStatus",
    "Transition",
    "coverage",
]
