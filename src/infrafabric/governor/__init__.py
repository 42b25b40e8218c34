"""The governor: capability matching, budgets debited atomically on the bus,
circuit breakers and resource policy."""

from __future__ import annotations

from infrafabric.governor.core import Candidate, Debit, IFGovernor
from infrafabric.governor.models import (
    BUILTIN_CAPABILITIES,
    MICROS,
    Breaker,
    BreakerState,
    Budget,
    ResourcePolicy,
    SwarmProfile,
    format_usd,
    usd,
)

__all__ = [
    "BUILTIN_CAPABILITIES",
    "MICROS",
    "Breaker",
    "BreakerState",
    "Budget",
    "Candidate",
    "Debit",
    "IFGovernor",
    "ResourcePolicy",
    "SwarmProfile",
    "format_usd",
    "usd",
]
