"""The exception tree of InfraFabric.

Every error the library raises on purpose derives from :class:`InfraFabricError`.
Each one carries the CLI exit code it maps to (see the CLI contract: 1 refused,
2 bad input or usage, 3 the bus cannot be reached, 4 the swarm is stopped by
the governor), so the command line never has to guess. Backends translate
their client library's exceptions into this tree in exactly one place each,
chaining the original as ``__cause__``.

The tree tells three kinds of failure apart, because a caller must treat them
differently::

    InfraFabricError
    ├── ConfigurationError     bad input: fix the call (exit 2)
    ├── RefusedError           the fleet's state says no: not found, not the
    │   │                      owner, wrong state, breaker open. Retrying the
    │   │                      same call cannot succeed until something changes.
    │   ├── NotFoundError ── TaskNotFoundError
    │   ├── NotOwnerError, TaskExistsError, InvalidStateError
    │   └── SwarmStoppedError ── BreakerOpenError, BudgetExhaustedError (exit 4)
    ├── BusError               the engine: unreachable, deadline missed, a
    │                          compare-and-swap that kept losing
    ├── SandboxError           agent code stopped by a limit
    ├── WorkspaceError         a git command a worktree or guard needed failed
    └── CredentialError        a scoped credential refused

:attr:`InfraFabricError.transient` marks the errors worth retrying as they
are: the bus was unreachable, a call missed its deadline (read back first:
the outcome is unknown), a compare-and-swap kept losing to other writers.
Everything else is permanent for that call. :func:`is_transient` is the test
retry loops use, so they retry only what can succeed.
"""

from __future__ import annotations

__all__ = [
    "BadKeyError",
    "BadRevisionError",
    "BoardError",
    "BreakerOpenError",
    "BudgetExhaustedError",
    "BusAccessError",
    "BusError",
    "BusTimeoutError",
    "BusUnavailableError",
    "CompactedError",
    "ConfigurationError",
    "ConflictError",
    "CorruptRecordError",
    "CredentialError",
    "CredentialExpiredError",
    "CredentialRevokedError",
    "CredentialScopeError",
    "ForbiddenImportError",
    "GuestTrapError",
    "InfraFabricError",
    "InvalidCredentialError",
    "InvalidStateError",
    "ModuleLoadError",
    "NotFoundError",
    "NotOwnerError",
    "OutOfFuelError",
    "OutOfMemoryError",
    "RateLimitedError",
    "RefusedError",
    "SandboxError",
    "SandboxTimeoutError",
    "ServerError",
    "SwarmStoppedError",
    "TaskExistsError",
    "TaskNotFoundError",
    "WorkspaceError",
    "is_transient",
]


class InfraFabricError(Exception):
    """Root of every error InfraFabric raises deliberately."""

    exit_code: int = 1
    #: whether the same call, repeated unchanged, may succeed (see the module docs)
    transient: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message


class ConfigurationError(InfraFabricError, ValueError):
    """Bad configuration or input: unknown URL scheme, malformed URL, bad option."""

    exit_code = 2


class BoardError(ConfigurationError):
    """A task board that cannot be imported: every problem found, one per line.

    Each entry of :attr:`problems` reads ``SOURCE:LINE: task ID: what is wrong``
    (the line and task are left out when they are not known).
    """

    def __init__(self, problems: list[str], *, hint: str | None = None) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"invalid task board: {self.problems[0]}"
        else:
            listed = "\n".join(f"  {p}" for p in self.problems)
            message = f"invalid task board: {len(self.problems)} problems\n{listed}"
        super().__init__(message, hint=hint)


class RefusedError(InfraFabricError):
    """The request was understood and the fleet's state refuses it (exit 1):
    retrying it unchanged cannot succeed until someone changes that state."""


class InvalidStateError(RefusedError):
    """The record is in a state the operation does not apply to (reopening a
    task that has not failed, for example)."""


class SwarmStoppedError(RefusedError):
    """The governor has stopped this swarm: it may claim nothing until a human
    acts (exit 4, distinct from "nothing to do yet", so an agent's loop can
    stop instead of spinning). :attr:`swarm_id` names it."""

    exit_code = 4

    def __init__(self, message: str, *, swarm_id: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.swarm_id = swarm_id


class BreakerOpenError(SwarmStoppedError):
    """The swarm's circuit breaker is open; only a manual reset closes it."""


class BudgetExhaustedError(SwarmStoppedError):
    """The swarm's budget is spent; a new budget (with a breaker reset) resumes it."""


class BusError(InfraFabricError):
    """Base of errors raised by an :class:`~infrafabric.bus.EventBus`."""


class BusUnavailableError(BusError):
    """The bus cannot be reached, or the connection to it was lost.

    Nothing was applied: the request was never handed to the server.
    """

    exit_code = 3
    transient = True


class BusAccessError(BusError):
    """The engine refused this client, or this client refused the engine:
    TLS (a certificate not trusted, expired or missing, TLS required or not
    offered) or authentication (credentials missing or wrong). Nothing was
    applied. Exit 3, like any bus that cannot be used, but not transient:
    the same call fails the same way until the configuration changes, and
    the message says which part to change."""

    exit_code = 3


class BusTimeoutError(BusError):
    """A call missed its deadline; the outcome is unknown.

    A write that timed out may still have been applied. Read the state back
    before retrying anything that must not happen twice (a claim, a debit).
    """

    exit_code = 3
    transient = True


class BadKeyError(BusError, ValueError):
    """A key, prefix or subject does not follow the key grammar."""

    exit_code = 2


class BadRevisionError(BusError, ValueError):
    """A revision argument that is not a positive integer."""

    exit_code = 2

    def __init__(self, revision: object) -> None:
        super().__init__(f"revision must be a positive integer, got {revision!r}")


class ConflictError(BusError):
    """Compare-and-swaps on a record kept losing to other writers until the
    retry policy gave up (transient: a later try may win). The bus itself
    reports a lost compare-and-swap as a return value, never as this."""

    transient = True


class CorruptRecordError(BusError):
    """A record on the bus that does not decode as its type (named with its
    key and revision). Permanent: only repairing the record helps."""


class NotFoundError(RefusedError, KeyError):
    """A key or record that had to exist does not."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return InfraFabricError.__str__(self)


class TaskNotFoundError(NotFoundError):
    """No task (or swarm) with that id exists on the board."""

    exit_code = 2


class NotOwnerError(RefusedError):
    """The caller does not hold the task's current claim (it lapsed, passed to
    another swarm, or never existed), so it may not heartbeat, release,
    complete or fail it."""


class TaskExistsError(RefusedError):
    """A task with that id already exists."""


class CompactedError(BusError):
    """A watch asked for a start revision that the engine no longer keeps."""


class ServerError(BusError):
    """A local server (nats-server, etcd) could not be started or stopped."""

    exit_code = 3


class WorkspaceError(InfraFabricError):
    """A git command that a task's worktree or a guard needed failed (its
    stderr is in the message); the claim itself is not affected."""


class SandboxError(InfraFabricError):
    """Agent code in the chassis sandbox was stopped; only that task ends.

    :attr:`limit` names what stopped it (``memory``, ``fuel``, ``timeout``,
    ``rate``, ``trap``) so callers, SLO samples and the CLI can say which.
    """

    limit: str = "trap"


class ModuleLoadError(SandboxError, ConfigurationError):
    """A module that cannot be loaded: malformed or truncated bytes, bad WAT,
    missing export, or a contract that does not validate (exit 2)."""

    exit_code = 2
    limit = "load"


class ForbiddenImportError(ModuleLoadError):
    """The module imports something the host does not grant (refused at load)."""

    limit = "import"


class GuestTrapError(SandboxError):
    """The guest trapped: unreachable, stack overflow, out-of-bounds access..."""

    limit = "trap"


class OutOfMemoryError(SandboxError):
    """The guest needed more memory than its limit."""

    limit = "memory"


class OutOfFuelError(SandboxError):
    """The guest used up its CPU allowance (fuel)."""

    limit = "fuel"


class SandboxTimeoutError(SandboxError):
    """The guest ran past its wall-clock deadline (epoch interruption)."""

    limit = "timeout"


class RateLimitedError(SandboxError):
    """The guest called the host API faster than its contract allows."""

    limit = "rate"


class CredentialError(InfraFabricError):
    """A scoped credential was refused. The message never contains the token."""


class InvalidCredentialError(CredentialError):
    """No credential matches the token presented."""


class CredentialExpiredError(CredentialError):
    """The credential's TTL has passed."""


class CredentialRevokedError(CredentialError):
    """The credential was revoked."""


class CredentialScopeError(CredentialError):
    """The credential does not allow this endpoint (or swarm, or task)."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying unchanged: an :class:`InfraFabricError`
    marked :attr:`~InfraFabricError.transient` (bus unreachable, deadline
    missed, compare-and-swaps that kept losing). Refusals, bad input, sandbox
    limits and anything that is not ours are not."""
    return isinstance(exc, InfraFabricError) and exc.transient
