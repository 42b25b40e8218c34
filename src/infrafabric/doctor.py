"""``doctor``: find the records on the bus that no longer read, and quarantine them.

Everything InfraFabric writes goes through the record layer, which refuses a
value that would not read back (:mod:`infrafabric.bus.records`). A record can
still fail to decode: written by hand, by an older version with looser
bounds, or by something that is not InfraFabric. Such a record fails only the
commands about it (listings skip it with a warning), but it stays a poison
until someone deals with it. :func:`examine` lists every record of every kind
that does not decode as its model; :func:`quarantine` moves each one to
``quarantine/<its key>`` (its bytes kept for inspection) and deletes the
original under a compare-and-swap on the revision examined, so a record
repaired meanwhile is left alone. Each move is witnessed.

It also finds claims without their witness entry. A claim's ``task_claimed``
entry is written after the claim is acknowledged (off its critical path; see
:data:`infrafabric.fleet.WITNESSED_LATER`), so a process that dies in between
leaves a claim recorded only in its task's history, under its claim id.
:func:`unwitnessed_claims` lists those; :func:`witness_claims` writes their
entries (marked ``recovered``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from infrafabric.bus import EventBus
from infrafabric.bus.bounds import MAX_RECORD_BYTES
from infrafabric.bus.layout import (
    BREAKERS,
    BUDGETS,
    CREDENTIALS,
    LEDGER,
    POLICY,
    PROFILES,
    QUARANTINE,
    READY_DIRECTORY,
    READY_LANES,
    READY_SLOTS,
    READY_WHOLE,
    REPUTATION,
    SLO,
    SWARMS,
    TASKS,
    WORKSPACE_LEASES,
)
from infrafabric.bus.records import Records, decode
from infrafabric.coordinator.models import Task, TaskStatus
from infrafabric.errors import CorruptRecordError
from infrafabric.witness import Witness

__all__ = ["UNWITNESSED_GRACE", "Finding", "RecordKind", "Unwitnessed", "catalog", "examine", "quarantine",
           "unwitnessed_claims", "witness_claims"]

#: the ready index's keys: moving one aside may leave an available task unnamed
READY_PREFIX = "ready/"
#: seconds after a claim before its missing witness entry counts as lost (a live process writes it
#: within milliseconds; one written meanwhile must not be written twice)
UNWITNESSED_GRACE = 60.0


@dataclass(frozen=True)
class RecordKind:
    """Records of one model: the keys under ``prefix`` whose rest ``matches``."""

    prefix: str
    model: type[BaseModel]
    matches: Callable[[str], bool]
    what: str


@dataclass(frozen=True)
class Finding:
    """A record that does not read: its key, revision, size and what is wrong."""

    key: str
    revision: int
    size: int
    sha256: str
    kind: str
    problem: str

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "revision": self.revision, "bytes": self.size, "sha256": self.sha256,
                "kind": self.kind, "problem": self.problem}


def _flat(rest: str) -> bool:
    return "/" not in rest


def _single(rest: str) -> bool:
    return rest == ""


def _tail(name: str) -> Callable[[str], bool]:
    return lambda rest: rest.count("/") == 1 and rest.endswith(f"/{name}")


def _under(segment: str) -> Callable[[str], bool]:
    return lambda rest: rest.count("/") == 2 and rest.split("/")[1] == segment


def catalog() -> list[RecordKind]:
    """Every kind of record InfraFabric keeps on the bus, with its model."""
    from infrafabric.chassis.credentials import CredentialRecord
    from infrafabric.chassis.models import ServiceLevelObjective
    from infrafabric.chassis.reputation import ReputationRecord
    from infrafabric.chassis.slo import Sample, _Status
    from infrafabric.coordinator.models import PathLeaseTable, SwarmRecord, Task
    from infrafabric.coordinator.ready import Directory, Lane, Slot, Whole
    from infrafabric.governor.models import Breaker, Budget, LedgerEntry, ResourcePolicy, SwarmProfile

    return [
        RecordKind(TASKS, Task, _flat, "task"),
        RecordKind(SWARMS, SwarmRecord, _flat, "swarm"),
        RecordKind(WORKSPACE_LEASES, PathLeaseTable, _single, "path-lease table"),
        RecordKind(READY_DIRECTORY, Directory, _single, "ready-index directory"),
        RecordKind(READY_LANES, Lane, _flat, "ready-index lane"),
        RecordKind(READY_SLOTS, Slot, lambda rest: rest.count("/") == 2, "ready-index slot"),
        RecordKind(READY_WHOLE, Whole, _single, "ready-index completeness mark"),
        RecordKind(PROFILES, SwarmProfile, _flat, "swarm profile"),
        RecordKind(BUDGETS, Budget, _flat, "budget"),
        RecordKind(BREAKERS, Breaker, _flat, "circuit breaker"),
        RecordKind(POLICY, ResourcePolicy, _single, "resource policy"),
        RecordKind(LEDGER, LedgerEntry, _flat, "ledger entry"),
        RecordKind(CREDENTIALS, CredentialRecord, _flat, "credential"),
        RecordKind(REPUTATION, ReputationRecord, _tail("current"), "reputation"),
        RecordKind(REPUTATION, ReputationRecord, _under("h"), "reputation history"),
        RecordKind(SLO, _Status, _tail("status"), "SLO status"),
        RecordKind(SLO, ServiceLevelObjective, _tail("objective"), "SLO objective"),
        RecordKind(SLO, Sample, _under("s"), "SLO sample"),
    ]


async def examine(bus: EventBus, kinds: list[RecordKind] | None = None) -> tuple[list[Finding], int]:
    """Every record of ``kinds`` (default: :func:`catalog`) that does not read,
    and how many records were read in all."""
    findings: list[Finding] = []
    seen = 0
    for kind in kinds if kinds is not None else catalog():
        async for entry in bus.scan(kind.prefix):
            rest = entry.key[len(kind.prefix):]
            if not kind.matches(rest):
                continue
            seen += 1
            problem = None
            if len(entry.value) > MAX_RECORD_BYTES:
                problem = f"{len(entry.value):,} bytes, more than the {MAX_RECORD_BYTES:,} a record may hold"
            else:
                try:
                    decode(kind.model, entry)
                except CorruptRecordError as exc:
                    problem = exc.message.split(": ", 1)[-1]
            if problem is not None:
                findings.append(Finding(entry.key, entry.revision, len(entry.value),
                                        hashlib.sha256(entry.value).hexdigest(), kind.what, problem[:500]))
    return findings, seen


async def quarantine(bus: EventBus, findings: list[Finding], *, witness: Witness, by: str) -> list[Finding]:
    """Move each finding's record to ``quarantine/<key>`` and delete it, if it
    is still at the revision examined; witnessed as ``record_quarantined``.
    Returns the findings moved (a record changed meanwhile is left)."""
    moved = []
    for f in findings:
        entry = await bus.get(f.key)
        if entry is None or entry.revision != f.revision:
            continue
        if len(entry.value) <= MAX_RECORD_BYTES:
            await bus.put(f"{QUARANTINE}{f.key}", entry.value)
        if await bus.delete(f.key, f.revision):
            moved.append(f)
            if f.key.startswith(READY_PREFIX):  # the index may now lack a task: the next watcher re-indexes
                await bus.delete(READY_WHOLE)
            await witness.append("IF.doctor", "record_quarantined",
                                 {**f.as_dict(), "by": by,
                                  "kept_at": f"{QUARANTINE}{f.key}" if f.size <= MAX_RECORD_BYTES else None},
                                 actor=by, severity="warning")
    return moved


@dataclass(frozen=True)
class Unwitnessed:
    """A claim in its task's history with no ``task_claimed`` witness entry."""

    task_id: str
    swarm_id: str | None
    claim_id: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "swarm_id": self.swarm_id, "claim_id": self.claim_id,
                "claimed_at": self.at}


async def unwitnessed_claims(bus: EventBus, witness: Witness, *, now: float | None = None,
                             grace: float = UNWITNESSED_GRACE) -> list[Unwitnessed]:
    """Claims in tasks' histories (those tagged with their claim id) made
    more than ``grace`` seconds before ``now`` that have no ``task_claimed``
    entry in the chain. Reads the whole chain and every task (a check, not a
    hand-out); a history keeps a task's last transitions only, so a claim
    followed by many more before this runs is not found."""
    witnessed: set[str] = set()
    async for entry in witness.entries():
        claim_id = entry.params.get("claim_id") if entry.operation == "task_claimed" else None
        if isinstance(claim_id, str):
            witnessed.add(claim_id)
    before = (time.time() if now is None else now) - grace
    found = []
    async for record in Records(bus, TASKS, Task).scan():
        task = record.value
        found += [Unwitnessed(task.id, step.by, step.op, step.at) for step in task.history
                  if step.to is TaskStatus.CLAIMED and step.op is not None and step.reason == "claimed"
                  and step.op not in witnessed and step.at < before]
    return found


async def witness_claims(witness: Witness, claims: list[Unwitnessed], *, by: str) -> int:
    """Write the missing ``task_claimed`` entry of each claim (``recovered``:
    written from its task's history by ``by``); returns how many."""
    for claim in claims:
        await witness.append("IF.coordinator", "task_claimed",
                             {**claim.as_dict(), "recovered": True, "recovered_by": by},
                             actor=claim.swarm_id, severity="notice")
    return len(claims)
