"""The coordinator: a dependency-aware task board on the bus, atomic claims
with leases, push delivery and blocker escalation."""

from __future__ import annotations

from infrafabric.coordinator.core import AdmissionHook, ClaimOutcome, IFCoordinator, Observer
from infrafabric.coordinator.models import (
    SwarmRecord,
    Task,
    TaskEvent,
    TaskKind,
    TaskSpec,
    TaskStatus,
    Transition,
    coverage,
)

__all__ = [
    "AdmissionHook",
    "ClaimOutcome",
    "IFCoordinator",
    "Observer",
    "SwarmRecord",
    "Task",
    "TaskEvent",
    "TaskKind",
    "TaskSpec",
    "TaskStatus",
    "Transition",
    "coverage",
]
