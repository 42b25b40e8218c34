"""The seeds' public names, in one place (``docs/compat.md`` lists each one).

The seeds' implementation guides and coordination documents name an API
(``infrafabric.event_bus.EventBus``, ``IFGovernor(coordinator, policy)``,
``find_qualified_swarm(caps, max_cost=5.0)``, ``log_operation``,
``IFChassis()``, ``WeightedCoordinator``...). This package gives those names,
each delegating to the real implementation, bound to an explicit bus (see
:func:`connect`), with dollars converted once, exactly
(:mod:`infrafabric.compat.money`). The seeds' import paths are thin aliases
into here. New code should use the real API (:func:`infrafabric.open_fleet`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infrafabric.compat._runtime import Session, connect
    from infrafabric.compat.chassis import (
        CredentialManager,
        IFChassis,
        ServiceContract,
        ServiceLevelObjective,
        SLOTracker,
    )
    from infrafabric.compat.coordination import Agent, AgentProfile, WeightedCoordinator
    from infrafabric.compat.coordinator import EventBus, IFCoordinator
    from infrafabric.compat.governor import IFGovernor
    from infrafabric.compat.money import to_decimal, to_micros
    from infrafabric.compat.schemas import (
        Capability,
        ResourcePolicy,
        SwarmProfile,
        validate_capability_manifest,
    )
    from infrafabric.compat.witness import (
        get_operations,
        get_operations_async,
        log_operation,
        log_operation_async,
    )

# loaded on first use: the chassis' WebAssembly runtime is heavy to import
_LAZY = {
    **dict.fromkeys(("Session", "connect"), "infrafabric.compat._runtime"),
    **dict.fromkeys(("CredentialManager", "IFChassis", "ServiceContract", "ServiceLevelObjective",
                     "SLOTracker"), "infrafabric.compat.chassis"),
    **dict.fromkeys(("Agent", "AgentProfile", "WeightedCoordinator"), "infrafabric.compat.coordination"),
    **dict.fromkeys(("EventBus", "IFCoordinator"), "infrafabric.compat.coordinator"),
    "IFGovernor": "infrafabric.compat.governor",
    **dict.fromkeys(("to_decimal", "to_micros"), "infrafabric.compat.money"),
    **dict.fromkeys(("Capability", "ResourcePolicy", "SwarmProfile", "validate_capability_manifest"),
                    "infrafabric.compat.schemas"),
    **dict.fromkeys(("get_operations", "get_operations_async", "log_operation", "log_operation_async"),
                    "infrafabric.compat.witness"),
}

__all__ = [
    "Agent",
    "AgentProfile",
    "Capability",
    "CredentialManager",
    "EventBus",
    "IFChassis",
    "IFCoordinator",
    "IFGovernor",
    "ResourcePolicy",
    "SLOTracker",
    "ServiceContract",
    "ServiceLevelObjective",
    "Session",
    "SwarmProfile",
    "WeightedCoordinator",
    "connect",
    "get_operations",
    "get_operations_async",
    "log_operation",
    "log_operation_async",
    "to_decimal",
    "to_micros",
    "validate_capability_manifest",
]
assert set(__all__) == set(_LAZY)


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'infrafabric.compat' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
