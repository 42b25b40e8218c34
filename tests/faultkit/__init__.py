"""Fault testing: record what agents did, then check it against what the bus holds.

:mod:`faultkit.history` records every claim, heartbeat, completion,
debit and witness append as an invocation and an outcome (ok / fail / unknown);
:mod:`faultkit.checker` checks such a history against the final state
(single owner, exactly once, no lost writes, refusals hold, money, no stale
reads, witness chain); :mod:`faultkit.storm` runs agent processes on a local
cluster while faults are injected (:mod:`faultkit.proxy` cuts and slows links).

A test harness, not part of the product: it lives beside the tests (importable
as ``faultkit`` because the root conftest's folder is on ``sys.path``, like
``support``) and is not installed with ``infrafabric``.
"""

from __future__ import annotations

from faultkit.checker import (
    CHECKS,
    CheckReport,
    CheckResult,
    FinalState,
    LedgerEntry,
    Violation,
    check,
    read_final_state,
)
from faultkit.history import (
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
