"""Governor records: capabilities, swarm profiles, policy, budgets, breakers.

Money is integer micro-dollars everywhere (``1_000_000`` = 1 USD); user input
in dollars goes through :func:`usd` (``Decimal``, never ``float``).
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from infrafabric.bus.bounds import (
    MAX_MICROS,
    MAX_TOTAL_MICROS,
    Micros,
    TotalMicros,
    check_text,
    parse_dollars,
)
from infrafabric.coordinator.models import CAPABILITY_PATTERN, TASK_ID_PATTERN

__all__ = [
    "BUILTIN_CAPABILITIES",
    "MICROS",
    "Breaker",
    "BreakerState",
    "Budget",
    "Hold",
    "ResourcePolicy",
    "SwarmProfile",
    "format_usd",
    "usd",
]

MICROS = 1_000_000

#: the seeds' 16 capabilities and more; custom ones are ``domain:skill``
BUILTIN_CAPABILITIES = frozenset({
    "code-analysis:python", "code-analysis:javascript", "code-analysis:rust", "code-analysis:go",
    "integration:ndi", "integration:webrtc", "integration:h323", "integration:sip",
    "infra:distributed-systems", "infra:networking", "infra:kubernetes", "infra:observability",
    "cli:design", "cli:ux", "docs:technical-writing", "docs:markdown",
    "testing:integration", "testing:security", "testing:performance",
    "security:audit", "security:cryptography", "governance:policy", "data:modeling",
    "wasm:runtime", "architecture:design",
})

Capability = Annotated[str, Field(pattern=f"^{CAPABILITY_PATTERN}$")]
SwarmId = Annotated[str, Field(pattern=f"^{TASK_ID_PATTERN}$")]
#: a positive amount of money (a rate, a cap)
PositiveMicros = Annotated[int, Field(gt=0, le=MAX_MICROS, strict=True)]
#: a balance, which an overdraft may take below zero
Balance = Annotated[int, Field(ge=-MAX_TOTAL_MICROS, le=MAX_TOTAL_MICROS, strict=True)]
#: a reason or note kept on a record
Note = Annotated[str, Field(max_length=2000), AfterValidator(check_text)]


def usd(value: str | int | Decimal, *, what: str = "amount") -> int:
    """Dollars (``"2.50"``, ``Decimal``, ``2``) to integer micro-dollars, exactly
    (:func:`infrafabric.bus.bounds.parse_dollars`: ASCII digits, at most 6
    decimals, at most $1,000,000,000)."""
    return parse_dollars(value, what=what)


def format_usd(micros: int) -> str:
    """``1_234_500`` -> ``$1.2345``; at least cents, at most micro-dollars."""
    text = f"{abs(Decimal(micros)) / MICROS:,.6f}".rstrip("0")
    whole, frac = text.split(".")
    return f"{'-' if micros < 0 else ''}${whole}.{frac.ljust(2, '0')}"


class SwarmProfile(BaseModel):
    """What the governor knows about a swarm."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    id: SwarmId
    capabilities: list[Capability] = Field(default_factory=list)
    cost_per_hour_micros: PositiveMicros = MICROS
    #: 0..1, fed by the chassis' SLO tracking
    reputation: Decimal = Field(default=Decimal("1"), ge=0, le=1)
    model: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")

    @field_validator("capabilities")
    @classmethod
    def _sorted_unique(cls, caps: list[str]) -> list[str]:
        return sorted(set(caps))


class ResourcePolicy(BaseModel):
    """Limits the governor enforces (``resource_policy:`` in YAML)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    max_swarms_per_task: int = Field(default=3, ge=1, le=100)
    max_cost_per_task_micros: PositiveMicros = 10 * MICROS
    #: share of a task's required capabilities a swarm must offer (coverage)
    min_capability_match: Decimal = Field(default=Decimal("0.7"), ge=0, le=1)
    circuit_breaker_failure_threshold: int = Field(default=3, ge=1, le=1000)
    #: how many waiting agents a task that becomes available is pushed to at once (then the next
    #: as many, if none took it within the push window)
    push_fanout: int = Field(default=3, ge=1, le=1000)
    #: escalations (breaker trips, blockers nobody can help with) are also POSTed here as JSON
    escalation_webhook: str | None = Field(default=None, max_length=2000, pattern=r"^https?://[^\s]+$")

    @field_validator("escalation_webhook")
    @classmethod
    def _no_credentials(cls, url: str | None) -> str | None:
        # the policy is a record every process reads and the witness logs: no secret belongs in it
        if url is not None and "@" in url.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("must not carry credentials (user:password@host): the policy and the audit "
                             "log would hold them; let the endpoint authenticate another way")
        return url


class LedgerEntry(BaseModel):
    """One debit, as recorded in the cost ledger."""

    model_config = ConfigDict(defer_build=True, extra="ignore", frozen=True)

    key: str = Field(default="", max_length=1024)
    swarm_id: str = Field(max_length=128)
    operation: str = Field(max_length=200)
    cost_micros: Micros
    task_id: str | None = Field(default=None, max_length=128)
    model: str | None = Field(default=None, max_length=200)
    at: float = Field(allow_inf_nan=False)
    remaining_micros: Balance


#: claims in progress whose estimated cost one budget record can hold at once
MAX_HOLDS = 1000


class Hold(BaseModel):
    """The estimated cost of one claim in progress, held against its swarm's
    budget from the claim until it ends (completed, failed, released or
    lapsed); costs tracked for its task are drawn from it meanwhile."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    task_id: str = Field(max_length=128)
    micros: Micros
    at: float = Field(allow_inf_nan=False)


class Budget(BaseModel):
    """A swarm's budget. ``remaining`` = limit - spent - reserved.

    ``reserved`` counts every hold (by claim id, in ``holds``) and what was
    reserved by :meth:`~infrafabric.governor.IFGovernor.reserve`.

    ``journal`` holds the latest debits themselves, written in the same
    compare-and-swap as ``spent``, so a debit and its ledger entry can never
    part: a process that dies right after debiting leaves its entry here, and
    entries leave the journal only once their ``gov/ledger/`` key exists."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    limit_micros: Micros
    spent_micros: TotalMicros = 0
    reserved_micros: TotalMicros = 0
    updated_at: float = Field(default=0.0, allow_inf_nan=False)
    journal: list[LedgerEntry] = Field(default_factory=list, max_length=64)
    holds: dict[str, Hold] = Field(default_factory=dict, max_length=MAX_HOLDS)

    @property
    def remaining_micros(self) -> int:
        return self.limit_micros - self.spent_micros - self.reserved_micros

    @property
    def held_micros(self) -> int:
        """What claims in progress hold (part of ``reserved``)."""
        return sum(h.micros for h in self.holds.values())

    @property
    def exhausted(self) -> bool:
        """Spent (or reserved by hand) to the limit: holds of claims in
        progress do not count, since they come back when those claims end."""
        return self.remaining_micros + self.held_micros <= 0


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class Breaker(BaseModel):
    """A swarm's circuit breaker: its own record, never a zeroed budget."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    state: BreakerState = BreakerState.CLOSED
    reason: Note = ""
    changed_at: float = Field(default=0.0, allow_inf_nan=False)
    changed_by: str | None = Field(default=None, max_length=200)
    consecutive_failures: int = Field(default=0, ge=0, le=10**9)
