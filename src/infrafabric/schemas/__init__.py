"""The seeds' ``infrafabric.schemas`` package: aliases into
:mod:`infrafabric.compat` (see ``docs/compat.md``)."""
