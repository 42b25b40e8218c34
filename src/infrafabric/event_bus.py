"""The seeds' ``from infrafabric.event_bus import EventBus``: an alias of
:class:`infrafabric.compat.EventBus` (see ``docs/compat.md``). The real bus
interface is :class:`infrafabric.bus.EventBus`."""

from __future__ import annotations

from infrafabric.compat.coordinator import EventBus

__all__ = ["EventBus"]
