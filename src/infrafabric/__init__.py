"""InfraFabric: a control plane for fleets of AI agents.

The bus (:mod:`infrafabric.bus`) is the one place shared state lives; the
coordinator, governor, chassis and witness are thin clients over it.
:func:`open_fleet` is the entry point: it connects and wires them together,
governed and witnessed, as every front end does (:mod:`infrafabric.fleet`).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs the hooks' start-up ~15 ms

if TYPE_CHECKING:
    from infrafabric.bus import (
        Entry,
        EventBus,
        EventKind,
        Health,
        Message,
        Subscription,
        Watch,
        WatchEvent,
        connect,
    )
    from infrafabric.chassis import (
        CredentialManager,
        IFChassis,
        ReputationSystem,
        ResourceLimits,
        ServiceContract,
        ServiceLevelObjective,
        SLOTracker,
    )
    from infrafabric.coordinator import IFCoordinator, TaskSpec
    from infrafabric.errors import (
        BadKeyError,
        BusError,
        BusTimeoutError,
        BusUnavailableError,
        CompactedError,
        ConfigurationError,
        ConflictError,
        InfraFabricError,
        NotFoundError,
        ServerError,
    )
    from infrafabric.fleet import Fleet, assemble, open_fleet
    from infrafabric.governor import IFGovernor, ResourcePolicy, SwarmProfile
    from infrafabric.witness import IFWitness, Witness

__version__ = "0.1.0"

# Everything is loaded on first use, so that `import infrafabric` (and so every
# submodule, the hooks' among them) stays light and the parts' one-way imports
# never form a cycle.
_LAZY = {
    **{name: "infrafabric.bus" for name in ("Entry", "EventBus", "EventKind", "Health", "Message",
                                            "Subscription", "Watch", "WatchEvent", "connect")},
    **{name: "infrafabric.errors" for name in ("BadKeyError", "BusError", "BusTimeoutError",
                                               "BusUnavailableError", "CompactedError", "ConfigurationError",
                                               "ConflictError", "InfraFabricError", "NotFoundError",
                                               "ServerError")},
    "open_fleet": "infrafabric.fleet",
    "assemble": "infrafabric.fleet",
    "Fleet": "infrafabric.fleet",
    "IFCoordinator": "infrafabric.coordinator",
    "IFGovernor": "infrafabric.governor",
    "IFWitness": "infrafabric.witness",
    "Witness": "infrafabric.witness",
    "SwarmProfile": "infrafabric.governor",
    "ResourcePolicy": "infrafabric.governor",
    "TaskSpec": "infrafabric.coordinator",
    "IFChassis": "infrafabric.chassis",
    "ServiceContract": "infrafabric.chassis",
    "ResourceLimits": "infrafabric.chassis",
    "ServiceLevelObjective": "infrafabric.chassis",
    "CredentialManager": "infrafabric.chassis",
    "SLOTracker": "infrafabric.chassis",
    "ReputationSystem": "infrafabric.chassis",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'infrafabric' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "BadKeyError",
    "BusError",
    "BusTimeoutError",
    "BusUnavailableError",
    "CompactedError",
    "ConfigurationError",
    "ConflictError",
    "CredentialManager",
    "Entry",
    "EventBus",
    "EventKind",
    "Fleet",
    "Health",
    "IFChassis",
    "IFCoordinator",
    "IFGovernor",
    "IFWitness",
    "InfraFabricError",
    "Message",
    "NotFoundError",
    "ReputationSystem",
    "ResourceLimits",
    "ResourcePolicy",
    "SLOTracker",
    "ServerError",
    "ServiceContract",
    "ServiceLevelObjective",
    "Subscription",
    "SwarmProfile",
    "TaskSpec",
    "Watch",
    "WatchEvent",
    "Witness",
    "__version__",
    "assemble",
    "connect",
    "open_fleet",
]
