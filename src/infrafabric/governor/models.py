"""Governor records: capabilities, swarm profiles, policy, budgets, breakers.

Money is integer micro-dollars everywhere (``1_000_000`` = 1 USD); user input
in dollars goes through :func:`usd` (``Decimal``, never ``float``).
"""

from __future__ import annotations

import enum
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infrafabric.coordinator.models import CAPABILITY_PATTERN, TASK_ID_PATTERN
from infrafabric.errors import ConfigurationError

__all__ = [
    "BUILTIN_CAPABILITIES",
    "MICROS",
    "Breaker",
    "BreakerState",
    "Budget",
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


def usd(value: str | int | Decimal, *, what: str = "amount") -> int:
    """Dollars (``"2.50"``, ``Decimal``, ``2``) to integer micro-dollars, exactly."""
    try:
        amount = Decimal(str(value).strip().lstrip("$"))
    except InvalidOperation as exc:
        raise ConfigurationError(f"{what} {value!r} is not a number of dollars") from exc
    micros = amount * MICROS
    if not amount.is_finite() or micros != micros.to_integral_value():
        raise ConfigurationError(f"{what} {value!r} has more than 6 decimals")
    return int(micros)


def format_usd(micros: int) -> str:
    """``1_234_500`` -> ``$1.2345``; at least cents, at most micro-dollars."""
    text = f"{abs(Decimal(micros)) / MICROS:,.6f}".rstrip("0")
    whole, frac = text.split(".")
    return f"{'-' if micros < 0 else ''}${whole}.{frac.ljust(2, '0')}"


class SwarmProfile(BaseModel):
    """What the governor knows about a swarm."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: SwarmId
    capabilities: list[Capability] = Field(default_factory=list)
    cost_per_hour_micros: int = Field(default=MICROS, gt=0)
    #: 0..1, fed by the chassis' SLO tracking
    reputation: Decimal = Field(default=Decimal("1"), ge=0, le=1)
    model: str | None = None

    @field_validator("capabilities")
    @classmethod
    def _sorted_unique(cls, caps: list[str]) -> list[str]:
        return sorted(set(caps))


class ResourcePolicy(BaseModel):
    """Limits the governor enforces (``resource_policy:`` in YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_swarms_per_task: int = Field(default=3, ge=1, le=100)
    max_cost_per_task_micros: int = Field(default=10 * MICROS, gt=0)
    #: share of a task's required capabilities a swarm must offer (coverage)
    min_capability_match: Decimal = Field(default=Decimal("0.7"), ge=0, le=1)
    circuit_breaker_failure_threshold: int = Field(default=3, ge=1, le=1000)
    #: escalations (breaker trips, blockers nobody can help with) are also POSTed here as JSON
    escalation_webhook: str | None = Field(default=None, max_length=2000, pattern=r"^https?://[^\s]+$")


class LedgerEntry(BaseModel):
    """One debit, as recorded in the cost ledger."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    key: str = ""
    swarm_id: str
    operation: str
    cost_micros: int
    task_id: str | None = None
    model: str | None = None
    at: float
    remaining_micros: int


class Budget(BaseModel):
    """A swarm's budget. ``remaining`` = limit - spent - reserved.

    ``journal`` holds the latest debits themselves, written in the same
    compare-and-swap as ``spent``, so a debit and its ledger entry can never
    part: a process that dies right after debiting leaves its entry here, and
    entries leave the journal only once their ``gov/ledger/`` key exists."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit_micros: int = Field(ge=0)
    spent_micros: int = Field(default=0, ge=0)
    reserved_micros: int = Field(default=0, ge=0)
    updated_at: float = 0.0
    journal: list[LedgerEntry] = Field(default_factory=list)

    @property
    def remaining_micros(self) -> int:
        return self.limit_micros - self.spent_micros - self.reserved_micros


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class Breaker(BaseModel):
    """A swarm's circuit breaker: its own record, never a zeroed budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: BreakerState = BreakerState.CLOSED
    reason: str = ""
    changed_at: float = 0.0
    changed_by: str | None = None
    consecutive_failures: int = Field(default=0, ge=0)
