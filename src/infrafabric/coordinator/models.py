"""The task model: what a board defines (:class:`TaskSpec`) and what lives on
the bus (:class:`Task`, a spec plus its live state)."""

from __future__ import annotations

import enum
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, field_validator

from infrafabric.bus.bounds import Hours, Line, Micros, Priority, Text

__all__ = [
    "TASK_ID_PATTERN",
    "PathLease",
    "PathLeaseTable",
    "Presence",
    "SwarmRecord",
    "Task",
    "TaskEvent",
    "TaskKind",
    "TaskSpec",
    "TaskStatus",
    "Transition",
    "WorkspaceRecord",
    "coverage",
]

#: task ids are single key segments: letters, digits and . _ - : @ + = ~
TASK_ID_PATTERN = r"[A-Za-z0-9._\-:@+=~]{1,128}"
_TASK_ID = re.compile(TASK_ID_PATTERN)
#: capabilities are lowercase words, optionally namespaced: ``python``, ``domain:skill``
CAPABILITY_PATTERN = r"[a-z0-9][a-z0-9_.\-]*(?::[a-z0-9][a-z0-9_.\-]*)?"

TaskId = Annotated[str, Field(pattern=f"^{TASK_ID_PATTERN}$")]
Capability = Annotated[str, Field(pattern=f"^{CAPABILITY_PATTERN}$")]

#: what git's check-ref-format refuses anywhere in a branch name
_BRANCH_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def check_branch(value: str) -> str:
    """A branch name git accepts (``git check-ref-format --branch``): no space,
    control character or any of ``~^:?*[\\``, no ``..``, ``@{`` or ``//``, no
    part that starts with ``.`` or ends with ``.lock``, not starting with ``-``
    or ``/``, not ending with ``/`` or ``.``, not ``@``."""
    problem = None
    if _BRANCH_BAD.search(value):
        problem = "holds a character or sequence git refuses in a branch name (space, ~^:?*[\\, .., @{, //)"
    elif value.startswith(("-", "/")) or value.endswith(("/", ".")) or value == "@":
        problem = "starts with - or /, ends with / or ., or is @"
    elif any(part.startswith(".") or part.endswith(".lock") for part in value.split("/")):
        problem = "has a part that starts with . or ends with .lock"
    if problem is not None:
        raise ValueError(f"is not a branch name git accepts: it {problem}")
    return value


def check_path_glob(value: str) -> str:
    """A path pattern inside the repository, relative to its top, POSIX style:
    ``src/parser/**``, ``docs/*.md``. Not absolute, no ``..`` part, no
    backslash, no empty part, brackets balanced; a leading ``./`` is dropped."""
    text = value.removeprefix("./")
    if text == ".":
        text = "**"  # the whole repository
    problem = None
    if not text or text.strip() != text or any(c < " " or c == "\x7f" for c in text):
        problem = "is empty, has surrounding spaces or a control character"
    elif text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", text):
        problem = "is absolute: paths are relative to the repository's top"
    elif "\\" in text:
        problem = "has a backslash: write paths with /"
    elif any(part in ("", "..") for part in text.split("/")):
        problem = "has an empty or .. part: it must stay inside the repository"
    elif text.count("[") != text.count("]"):
        problem = "has an unbalanced [ ]"
    if problem is not None:
        raise ValueError(f"is not a path pattern inside the repository: it {problem}")
    return text


def default_branch(task_id: str, prefix: str = "if/") -> str:
    """``<prefix><task-id>`` (``if/<task-id>``), with what git refuses in a task
    id (``:`` ``~``, a run of dots, a leading ``.``, a trailing ``.`` or
    ``.lock``) replaced by ``-``."""
    name = re.sub(r"\.\.+", "-", re.sub(r"[:~]", "-", task_id))
    if name.startswith("."):
        name = "-" + name[1:] if len(name) > 1 else "-"
    if name.endswith("."):
        name = name[:-1] + "-"
    if name.endswith(".lock"):
        name = name[: -len(".lock")] + "-lock"
    return f"{prefix}{name}"


PathGlob = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(check_path_glob)]
Branch = Annotated[str, Field(min_length=1, max_length=250), AfterValidator(check_branch)]


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

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    id: TaskId
    title: Line
    description: Text = ""
    acceptance_criteria: list[Annotated[Text, Field(max_length=4000)]] = Field(default_factory=list,
                                                                                max_length=200)
    dependencies: list[TaskId] = Field(default_factory=list, max_length=1000)
    capabilities: list[Capability] = Field(default_factory=list, max_length=100)
    kind: TaskKind = TaskKind.CRITICAL
    #: higher runs first among tasks of the same kind
    priority: Priority = 0
    estimate_hours: Hours | None = None
    model: Annotated[Line, Field(max_length=200)] | None = None
    deliverable: Annotated[Text, Field(max_length=4000)] | None = None
    #: the most this task may cost, in integer micro-dollars (1 USD = 1_000_000)
    budget_micros: Micros | None = None
    #: the board section it came from (e.g. "IF.coordinator Tasks")
    section: Line | None = None
    #: the files the task will touch, as path patterns relative to the repository's top
    paths: list[PathGlob] = Field(default_factory=list, max_length=100)
    #: the git branch its work goes on (default: ``if/<task-id>``, see :attr:`work_branch`)
    branch: Branch | None = None

    @property
    def work_branch(self) -> str:
        """The branch the task's work goes on: :attr:`branch`, else ``if/<task-id>``."""
        return self.branch or default_branch(self.id)

    @field_validator("dependencies")
    @classmethod
    def _no_duplicate_dependencies(cls, deps: list[str]) -> list[str]:
        if len(set(deps)) != len(deps):
            raise ValueError("a dependency is listed twice")
        return deps


class Transition(BaseModel):
    """One status change in a task's history."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    at: float = Field(allow_inf_nan=False)
    to: TaskStatus
    by: str | None = Field(default=None, max_length=200)
    reason: Annotated[Text, Field(max_length=4000)] = ""
    #: the operation that made it (recognises a retried write that had landed)
    op: str | None = Field(default=None, max_length=32)


class WorkspaceRecord(BaseModel):
    """Where a task's work is: its branch, the worktree its holder made for it
    (``--worktree``, on ``host``) and the commit there when it was last looked
    at (recorded at completion)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    branch: Branch
    worktree: Annotated[str, Field(max_length=4096)] | None = None
    host: Line | None = None
    head: Annotated[str, Field(pattern=r"^[0-9a-f]{7,64}$")] | None = None


class Task(TaskSpec):
    """A task on the bus: its spec plus live state."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    status: TaskStatus = TaskStatus.BLOCKED
    owner: str | None = None
    #: wall-clock time (epoch seconds) at which the owner's claim lapses
    lease_until: float | None = Field(default=None, allow_inf_nan=False)
    #: the lease the current claim was taken with, in seconds: what a heartbeat renews it for
    lease_ttl: float | None = Field(default=None, gt=0, le=7 * 86400, allow_inf_nan=False)
    #: random token of the current claim, handed to its owner (the fencing token)
    claim_id: str | None = None
    #: bumped by every claim (and by voiding a claim that never landed): a path lease names the
    #: value its claim is taken at, so a lease whose claim can no longer land is seen to be dead
    claim_seq: int = Field(default=0, ge=0)
    #: the tasks that depend on this one (linked before each is created): a completion unblocks
    #: exactly these, without reading the board
    dependents: list[TaskId] = Field(default_factory=list, max_length=100_000)
    #: bumped each time the task becomes available: its slot in the ready index names the value
    #: (see :mod:`infrafabric.coordinator.ready`)
    ready_seq: int = Field(default=0, ge=0)
    attempts: int = Field(default=0, ge=0, le=10**6)
    max_attempts: int = Field(default=3, ge=1, le=10**6)
    result: JsonValue = None
    error: Annotated[Text, Field(max_length=4000)] | None = None
    #: where its work is (``--worktree``): branch, worktree, head commit at completion
    workspace: WorkspaceRecord | None = None
    #: the holder's last progress note (a heartbeat's): handed to whoever takes the task over
    progress: Annotated[Text, Field(max_length=4000)] | None = None
    created_at: float = Field(default=0.0, allow_inf_nan=False)
    updated_at: float = Field(default=0.0, allow_inf_nan=False)
    history: list[Transition] = Field(default_factory=list, max_length=1000)


class PathLease(BaseModel):
    """A claim's lease on its task's paths (and explicit branch), one entry of
    the :class:`PathLeaseTable`. It holds only while its claim does: the task
    is claimed with :attr:`claim_id` and its lease has not lapsed. An entry
    whose task still has ``claim_seq == seq`` is a claim in flight (or one
    whose claimant died before claiming): a rival claimant voids it by bumping
    the task's ``claim_seq``, after which that claim can never land."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    task_id: TaskId
    swarm_id: TaskId
    claim_id: Annotated[str, Field(min_length=1, max_length=64)]
    #: the task's ``claim_seq`` this claim is taken at (the claim sets it to ``seq + 1``)
    seq: int = Field(ge=0)
    paths: list[PathGlob] = Field(default_factory=list, max_length=100)
    #: the task's explicit branch (a default ``if/<task-id>`` branch is the task's alone)
    branch: Branch | None = None
    taken_at: float = Field(allow_inf_nan=False)


class PathLeaseTable(BaseModel):
    """Every path lease, one record (``workspace/leases``): one compare-and-swap
    decides whether a claim's paths are free, so two overlapping leases are
    never both written."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    leases: dict[TaskId, PathLease] = Field(default_factory=dict)


class SwarmRecord(BaseModel):
    """A registered swarm as the coordinator sees it (the governor adds more)."""

    model_config = ConfigDict(defer_build=True, extra="allow", frozen=True)

    id: TaskId
    capabilities: list[Capability] = Field(default_factory=list)
    registered_at: float = 0.0


class Presence(BaseModel):
    """A swarm's agent connected now (an ``ifctl mcp`` session): refreshed
    while it lasts, removed when it ends, stale after ``ttl`` if it dies."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    swarm_id: TaskId
    via: Line
    host: Line
    pid: int = Field(ge=0)
    since: float = Field(allow_inf_nan=False)
    seen_at: float = Field(allow_inf_nan=False)
    ttl: float = Field(gt=0, le=86400, allow_inf_nan=False)
    #: the swarm's capabilities, on a waiting agent's mark (who a task is pushed to is chosen from them)
    capabilities: list[Capability] | None = Field(default=None, max_length=1000)


class TaskEvent(BaseModel):
    """One transition seen on the board."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

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
