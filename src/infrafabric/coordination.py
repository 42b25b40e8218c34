"""The coordination documents' ``from infrafabric.coordination import
WeightedCoordinator, Agent, AgentProfile``: aliases into
:mod:`infrafabric.compat.coordination` (see ``docs/compat.md``)."""

from __future__ import annotations

from infrafabric.compat.coordination import Agent, AgentProfile, WeightedCoordinator

__all__ = ["Agent", "AgentProfile", "WeightedCoordinator"]
