"""The seeds' ``from infrafabric.chassis.auth import CredentialManager``: the
bus-less ``CredentialManager()`` of :mod:`infrafabric.compat.chassis`,
resolved on first use (see ``docs/compat.md``). The real manager is
:class:`infrafabric.chassis.CredentialManager` (``CredentialManager(bus, ...)``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infrafabric.chassis.credentials import ScopedCredentials
    from infrafabric.compat.chassis import CredentialManager

__all__ = ["CredentialManager", "ScopedCredentials"]


def __getattr__(name: str) -> object:
    # a lower part naming a compat name: the one import of compat the layers test allows here
    if name == "CredentialManager":
        from infrafabric.compat import chassis

        return chassis.CredentialManager
    if name == "ScopedCredentials":
        from infrafabric.chassis.credentials import ScopedCredentials

        return ScopedCredentials
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
