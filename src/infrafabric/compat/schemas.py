"""The seeds' ``infrafabric.schemas.capability``: ``Capability``,
``SwarmProfile``, ``ResourcePolicy``, ``validate_capability_manifest``.

These are the seeds' plain dataclasses, with dollars as the seeds write them
(floats welcome); :meth:`SwarmProfile.to_profile` and
:meth:`ResourcePolicy.to_policy` convert them once, exactly, into the
governor's records (integer micro-dollars, ``Decimal`` shares; see
:mod:`infrafabric.compat.money`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from infrafabric.compat.money import Dollars, to_micros
from infrafabric.errors import ConfigurationError
from infrafabric.governor import ResourcePolicy as GovernorPolicy
from infrafabric.governor import SwarmProfile as GovernorProfile

__all__ = ["Capability", "ResourcePolicy", "SwarmProfile", "capability_names", "share",
           "validate_capability_manifest"]


class Capability(enum.Enum):
    """The seeds' capability names (any ``domain:skill`` string is accepted too)."""

    CODE_ANALYSIS_RUST = "code-analysis:rust"
    CODE_ANALYSIS_PYTHON = "code-analysis:python"
    CODE_ANALYSIS_JAVASCRIPT = "code-analysis:javascript"
    CODE_ANALYSIS_GO = "code-analysis:go"
    INTEGRATION_SIP = "integration:sip"
    INTEGRATION_NDI = "integration:ndi"
    INTEGRATION_WEBRTC = "integration:webrtc"
    INTEGRATION_H323 = "integration:h323"
    INFRA_DISTRIBUTED_SYSTEMS = "infra:distributed-systems"
    INFRA_NETWORKING = "infra:networking"
    CLI_DESIGN = "cli:design"
    CLI_TESTING = "cli:testing"
    ARCHITECTURE_PATTERNS = "architecture:patterns"
    ARCHITECTURE_SECURITY = "architecture:security"
    DOCS_TECHNICAL_WRITING = "docs:technical-writing"
    DOCS_API_DESIGN = "docs:api-design"


def capability_names(caps: Any, *, what: str) -> list[str]:
    """``Capability`` members or strings as the governor's capability strings."""
    if isinstance(caps, str | Capability) or not hasattr(caps, "__iter__"):
        raise ConfigurationError(f"{what} must be a list of capabilities, got {caps!r}"[:200])
    out = []
    for cap in caps:
        if isinstance(cap, Capability):
            out.append(cap.value)
        elif isinstance(cap, str):
            out.append(cap)
        else:
            raise ConfigurationError(f"{what} holds {cap!r}, neither a Capability nor a string"[:200])
    return out


def share(value: object, *, what: str) -> Decimal:
    """A share within 0-1 (reputation, match threshold), a float taken at its
    shortest decimal form, like money."""
    if isinstance(value, bool) or not isinstance(value, float | int | Decimal | str):
        raise ConfigurationError(f"{what} must be a number within 0-1, got {value!r}"[:200])
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(f"{what} must be a finite number within 0-1, got {value!r}")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except ArithmeticError:
        raise ConfigurationError(f"{what} must be a number within 0-1, got {value!r}"[:200]) from None
    if not number.is_finite() or not 0 <= number <= 1:
        raise ConfigurationError(f"{what} must be within 0-1, got {value!r}"[:200])
    return number


@dataclass
class SwarmProfile:
    """The seeds' swarm profile (dollars as the seeds write them)."""

    swarm_id: str
    capabilities: list[Any]
    cost_per_hour: Dollars  # Haiku: $1-2, Sonnet: $15-20
    reputation_score: float | Decimal = 1.0  # 0.0-1.0
    current_budget_remaining: Dollars | None = None  # None: unmetered
    model: str | None = None

    def to_profile(self) -> GovernorProfile:
        """The governor's record of this profile (exact micro-dollars)."""
        cost = to_micros(self.cost_per_hour, what="cost_per_hour")
        if cost <= 0:
            raise ConfigurationError(f"cost_per_hour must be more than zero, got {self.cost_per_hour!r}")
        return GovernorProfile(id=self.swarm_id,
                               capabilities=capability_names(self.capabilities, what="capabilities"),
                               cost_per_hour_micros=cost,
                               reputation=share(self.reputation_score, what="reputation_score"),
                               model=self.model)

    def budget_micros(self) -> int | None:
        if self.current_budget_remaining is None:
            return None
        return to_micros(self.current_budget_remaining, what="current_budget_remaining")


@dataclass
class ResourcePolicy:
    """The seeds' resource policy (``max_cost_per_task`` in dollars)."""

    max_swarms_per_task: int = 3
    max_cost_per_task: Dollars = 10.0
    min_capability_match: float | Decimal = 0.7  # 70% match required
    circuit_breaker_failure_threshold: int = 3
    #: anything else the governor's policy has (``push_fanout``, ``escalation_webhook``)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_policy(self) -> GovernorPolicy:
        """The governor's policy record (exact micro-dollars); a
        ConfigurationError names a field that does not fit."""
        max_cost = to_micros(self.max_cost_per_task, what="max_cost_per_task")
        try:
            return GovernorPolicy(max_swarms_per_task=self.max_swarms_per_task,
                                  max_cost_per_task_micros=max_cost,
                                  min_capability_match=share(self.min_capability_match,
                                                             what="min_capability_match"),
                                  circuit_breaker_failure_threshold=self.circuit_breaker_failure_threshold,
                                  **self.extra)
        except ValueError as exc:  # pydantic's ValidationError names the field
            raise ConfigurationError(f"invalid ResourcePolicy: {exc}") from None


def validate_capability_manifest(manifest: dict[str, Any]) -> bool:
    """The seeds' check, made real: the manifest has ``swarm_id``,
    ``capabilities`` and ``cost_per_hour``, and they make a valid profile."""
    if not isinstance(manifest, dict) or not all(k in manifest for k in ("swarm_id", "capabilities",
                                                                         "cost_per_hour")):
        return False
    try:
        SwarmProfile(swarm_id=manifest["swarm_id"], capabilities=manifest["capabilities"],
                     cost_per_hour=manifest["cost_per_hour"]).to_profile()
    except (ConfigurationError, ValueError):
        return False
    return True
