"""Fault testing: record what agents did, then check it against what the bus holds.

:mod:`infrafabric.faults.history` records every claim, heartbeat, completion,
debit and witness append as an invocation and an outcome (ok / fail / unknown);
:mod:`infrafabric.faults.checker` checks such a history against the final state
(single owner, exactly once, no lost writes, refusals hold, money, no stale
reads, witness chain).
"""

from __future__ import annotations

from infrafabric.faults.checker import (
    CHECKS,
    CheckReport,
    CheckResult,
    FinalState,
    LedgerEntry,
    Violation,
    check,
    read_final_state,
)
from infrafabric.faults.history import (
    Call,
    History,
    HistoryRecorder,
    Op,
    Outcome,
    classify,
    load_history,
    recorded_append,
    recorded_claim,
    recorded_complete,
    recorded_debit,
    recorded_fail,
    recorded_heartbeat,
    recorded_release,
)

__all__ = [
    "CHECKS",
    "Call",
    "CheckReport",
    "CheckResult",
    "FinalState",
    "History",
    "HistoryRecorder",
    "LedgerEntry",
    "Op",
    "Outcome",
    "Violation",
    "check",
    "classify",
    "load_history",
    "read_final_state",
    "recorded_append",
    "recorded_claim",
    "recorded_complete",
    "recorded_debit",
    "recorded_fail",
    "recorded_heartbeat",
    "recorded_release",
]
