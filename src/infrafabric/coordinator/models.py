"""The task model: what a board defines (:class:`TaskSpec`) and what lives on
the bus (:class:`Task`, a spec plus its live state)."""

from __future__ import annotations

import enum
import re
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

__all__ = [
    "TASK_ID_PATTERN",
    "SwarmRecord",
    "Task",
    "TaskEvent",
    "TaskKind",
    "TaskSpec",
    "TaskStatus",
    "Transition",
    "coverage",
]

#: task ids are single key segments: letters, digits and . _ - : @ + = ~
TASK_ID_PATTERN = r"[A-Za-z0-9._\-:@+=~]{1,128}"
_TASK_ID = re.compile(TASK_ID_PATTERN)
#: capabilities are lowercase words, optionally namespaced: ``python``, ``domain:skill``
CAPABILITY_PATTERN = r"[a-z0-9][a-z0-9_.\-]*(?::[a-z0-9][a-z0-9_.\-]*)?"

TaskId = Annotated[str, Field(pattern=f"^{TASK_ID_PATTERN}$")]
Capability = Annotated[str, Field(pattern=f"^{CAPABILITY_PATTERN}$")]


class TaskStatus(enum.StrEnum):
    """Lifecycle of a task. BLOCKED/AVAILABLE are derived from the dependencies."""

    BLOCKED = "blocked"
    AVAILABLE = "available"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskKind(enum.StrEnum):
    """Critical-path work is handed out before filler work."""

    CRITICAL = "critical"
    FILLER = "filler"


class TaskSpec(BaseModel):
    """A task as a board defines it (no live state)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: TaskId
    title: str = Field(min_length=1, max_length=500)
    description: str = ""
    acceptance_criteria: list[str] = Field(default_factory=list)
    dependencies: list[TaskId] = Field(default_factory=list)
    capabilities: list[Capability] = Field(default_factory=list)
    kind: TaskKind = TaskKind.CRITICAL
    #: higher runs first among tasks of the same kind
    priority: int = 0
    estimate_hours: Decimal | None = Field(default=None, ge=0)
    model: str | None = None
    deliverable: str | None = None
    #: the most this task may cost, in integer micro-dollars (1 USD = 1_000_000)
    budget_micros: int | None = Field(default=None, ge=0)
    #: the board section it came from (e.g. "IF.coordinator Tasks")
    section: str | None = None

    @field_validator("dependencies")
    @classmethod
    def _no_duplicate_dependencies(cls, deps: list[str]) -> list[str]:
        if len(set(deps)) != len(deps):
            raise ValueError("a dependency is listed twice")
        return deps


class Transition(BaseModel):
    """One status change in a task's history."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: float
    to: TaskStatus
    by: str | None = None
    reason: str = ""


class Task(TaskSpec):
    """A task on the bus: its spec plus live state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: TaskStatus = TaskStatus.BLOCKED
    owner: str | None = None
    #: wall-clock time (epoch seconds) at which the owner's claim lapses
    lease_until: float | None = None
    #: the lease the current claim was taken with, in seconds: what a heartbeat renews it for
    lease_ttl: float | None = None
    #: random token of the current claim, handed to its owner (the fencing token)
    claim_id: str | None = None
    attempts: int = 0
    max_attempts: int = 3
    result: JsonValue = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    history: list[Transition] = Field(default_factory=list)


class SwarmRecord(BaseModel):
    """A registered swarm as the coordinator sees it (the governor adds more)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: TaskId
    capabilities: list[Capability] = Field(default_factory=list)
    registered_at: float = 0.0


class TaskEvent(BaseModel):
    """One transition seen on the board."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str
    status: TaskStatus
    previous: TaskStatus | None
    owner: str | None
    by: str | None
    reason: str
    at: float
    revision: int


def is_task_id(value: str) -> bool:
    return _TASK_ID.fullmatch(value) is not None


def coverage(required: list[str], offered: list[str]) -> float:
    """|required ∩ offered| / |required| (1.0 when nothing is required).

    The seeds call this Jaccard, but what "70 % of the required capabilities"
    means is coverage: extra capabilities a swarm offers must not lower its match.
    """
    if not required:
        return 1.0
    return len(set(required) & set(offered)) / len(set(required))
