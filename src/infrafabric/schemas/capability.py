"""The seeds' ``from infrafabric.schemas.capability import Capability,
SwarmProfile, ResourcePolicy``: aliases of :mod:`infrafabric.compat.schemas`
(dollars as the seeds write them). The governor's own records are
:class:`infrafabric.governor.SwarmProfile` and
:class:`infrafabric.governor.ResourcePolicy` (integer micro-dollars)."""

from __future__ import annotations

from infrafabric.compat.schemas import Capability, ResourcePolicy, SwarmProfile, validate_capability_manifest

__all__ = ["Capability", "ResourcePolicy", "SwarmProfile", "validate_capability_manifest"]
