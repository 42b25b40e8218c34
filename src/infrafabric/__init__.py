"""InfraFabric: a control plane for fleets of AI agents.

The bus (:mod:`infrafabric.bus`) is the one place shared state lives; the
coordinator, governor, chassis and witness are thin clients over it.
"""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "BadKeyError",
    "BusError",
    "BusTimeoutError",
    "BusUnavailableError",
    "CompactedError",
    "ConfigurationError",
    "ConflictError",
    "Entry",
    "EventBus",
    "EventKind",
    "Health",
    "InfraFabricError",
    "Message",
    "NotFoundError",
    "ServerError",
    "Subscription",
    "Watch",
    "WatchEvent",
    "__version__",
    "connect",
]
