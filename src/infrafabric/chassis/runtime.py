"""The seeds' ``from infrafabric.chassis.runtime import IFChassis``: the
bus-less ``IFChassis()`` of :mod:`infrafabric.compat.chassis`, resolved on
first use (see ``docs/compat.md``). The real chassis is
:class:`infrafabric.chassis.IFChassis` (``IFChassis(bus, ...)``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infrafabric.compat.chassis import IFChassis, ServiceContract

__all__ = ["IFChassis", "ServiceContract"]


def __getattr__(name: str) -> object:
    # a lower part naming a compat name: the one import of compat the layers test allows here
    if name in __all__:
        from infrafabric.compat import chassis

        return getattr(chassis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
