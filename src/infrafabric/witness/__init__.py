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
