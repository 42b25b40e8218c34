"""The witness: a tamper-evident, hash-chained audit log of every operation,
shared by the whole fleet through the bus, with signed checkpoints."""

from __future__ import annotations

from infrafabric.witness.checkpoint import Checkpoint, Signer, Verifier
from infrafabric.witness.entry import GENESIS, SEVERITIES, WitnessEntry, canonical, entry_hash
from infrafabric.witness.log import Filter, VerifyReport, Witness

IFWitness = Witness  # the seeds' naming style

__all__ = [
    "GENESIS",
    "SEVERITIES",
    "Checkpoint",
    "Filter",
    "IFWitness",
    "Signer",
    "Verifier",
    "VerifyReport",
    "Witness",
    "WitnessEntry",
    "canonical",
    "entry_hash",
]

#: the seeds' module-level functions, bound to an explicit bus (see docs/compat.md)
_SEED_NAMES = ("get_operations", "get_operations_async", "log_operation", "log_operation_async")


def __getattr__(name: str) -> object:
    # the seeds' `from infrafabric.witness import log_operation, get_operations`: resolved on first use
    # from the compatibility surface (the one import of compat the layers test allows in this file)
    if name in _SEED_NAMES:
        from infrafabric.compat import witness

        return getattr(witness, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
