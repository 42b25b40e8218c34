"""Checking a recorded history against the state left on the bus.

:func:`check` takes the :class:`~faultkit.history.History` of a run and
the :class:`FinalState` read back afterwards (:func:`read_final_state`) and
checks each invariant below, listing every violation with the task and the
operations involved. Only acknowledged (``ok``) operations are promises; an
``unknown`` one may be present or absent; a ``fail`` one must have left no trace.

Operations are tied to the state through the tasks' transitions: a transition
``(at, to, by)`` is written by the operation of that kind by swarm ``by`` whose
wall-clock window ``[start, end]`` contains ``at`` (the coordinator stamps it
with ``time.time()`` inside the call). Acknowledged operations are matched
first, then unknown ones, then refused ones. ``skew`` widens every window and
loosens every time comparison (the processes of one machine share a clock).

Checks (:data:`CHECKS`):

``single_owner``
    In each task's history a claim is ended only by its owner completing,
    failing or releasing it, or by its lease lapsing: the next transition by
    anyone else (another claim, a lease expiry) may come no earlier than the
    lease's end (claim time + TTL, pushed on by each acknowledged heartbeat of
    that claim). A completion, failure or release is by the swarm whose claim
    immediately precedes it. No two acknowledged claims share a claim_id. The
    final record's owner and claim_id are those of its last claim.
``exactly_once``
    A task has at most one COMPLETED transition and nothing follows it; at most
    one acknowledged ``complete`` per task; every acknowledged ``complete`` is
    that completion (same swarm, inside its window) and its claim_id is the
    final record's.
``no_lost_writes``
    Every acknowledged claim, fail and release is a transition of its task;
    every acknowledged debit is a ledger entry with its key, swarm and amount;
    every acknowledged witness append is an entry with its entry_id.
    (Operations older than a truncated task history are skipped, with a note.)
``refusals_hold``
    No operation reported as a definite refusal took effect: no transition and
    no ledger entry can be explained only by a ``fail`` operation.
``money``
    Each budget's spent equals its initial spent plus the sum of its ledger
    entries, and lies between the acknowledged debits and those plus the
    unknown ones. No ledger entry belongs to a swarm without a budget.
``no_stale_reads``
    Real-time order is respected: if acknowledged operation Y returned before
    acknowledged operation X on the same task was invoked, X's effect follows
    Y's in the task's history (a heartbeat sits just after its claim). In
    particular no claim is acknowledged after a completion of that task was.
``witness``
    The verify report is ok; the entries' seqs are 1..n without gap or
    duplicate, each links to the previous hash and hashes correctly; no
    entry_id appears twice; an acknowledged append is at the seq it was told.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from faultkit.history import History, Op, Outcome
from infrafabric.bus import EventBus
from infrafabric.bus.layout import LEDGER
from infrafabric.coordinator import IFCoordinator, Task, TaskStatus, Transition
from infrafabric.governor.core import IFGovernor
from infrafabric.governor.models import Budget
from infrafabric.witness.entry import GENESIS, WitnessEntry
from infrafabric.witness.log import VerifyReport, Witness

__all__ = [
    "CHECKS",
    "CheckReport",
    "CheckResult",
    "FinalState",
    "LedgerEntry",
    "Violation",
    "check",
    "read_final_state",
]

CHECKS = ("single_owner", "exactly_once", "no_lost_writes", "refusals_hold", "money", "no_stale_reads",
          "witness")
TASK_OPS = ("claim", "complete", "fail", "release")
_RANK = {Outcome.OK: 0, Outcome.UNKNOWN: 1, Outcome.FAIL: 2}


@dataclass(frozen=True)
class LedgerEntry:
    """One cost ledger record as stored under ``gov/ledger/``."""

    key: str
    swarm_id: str
    cost_micros: int
    operation: str = ""
    task_id: str | None = None
    at: float = 0.0


@dataclass
class FinalState:
    """What the bus holds after a run. ``lease_ttl`` (the shortest lease any
    agent's coordinator used) enables the lease checks; ``initial_spent`` is
    what budgets had spent before the run (default 0)."""

    tasks: dict[str, Task] = field(default_factory=dict)
    budgets: dict[str, Budget] = field(default_factory=dict)
    ledger: list[LedgerEntry] = field(default_factory=list)
    #: None: the witness was not read (its checks are skipped)
    witness_entries: list[WitnessEntry] | None = None
    witness_report: VerifyReport | None = None
    lease_ttl: float | None = None
    initial_spent: dict[str, int] = field(default_factory=dict)


async def read_final_state(bus: EventBus, *, lease_ttl: float | None = None,
                           initial_spent: Mapping[str, int] | None = None,
                           witness: bool = True) -> FinalState:
    """Read every task (with its history), budget, ledger entry and witness
    entry from ``bus``, and verify the witness chain."""
    tasks = {t.id: t for t in await IFCoordinator(bus).list_tasks()}
    budgets = await IFGovernor(bus).budgets()
    stored: dict[str, dict[str, Any]] = {e.key: json.loads(e.value) async for e in bus.scan(LEDGER)}
    for budget in budgets.values():  # a debit whose process died before writing its key
        for pending in budget.journal:
            stored.setdefault(pending.key, pending.model_dump(exclude={"key"}))
    ledger = [LedgerEntry(key=key, swarm_id=str(data.get("swarm_id")),
                          cost_micros=int(data.get("cost_micros", 0)),
                          operation=str(data.get("operation") or ""), task_id=data.get("task_id"),
                          at=float(data.get("at") or 0.0)) for key, data in sorted(stored.items())]
    state = FinalState(tasks=tasks, budgets=budgets, ledger=ledger, lease_ttl=lease_ttl,
                       initial_spent=dict(initial_spent or {}))
    if witness:
        w = Witness(bus)
        state.witness_entries = [e async for e in w.entries()]
        state.witness_report = await w.verify()
    return state


@dataclass(frozen=True)
class Violation:
    """One broken invariant: the check, what is wrong, the task (if any) and
    the ids of the operations involved."""

    check: str
    message: str
    task: str | None = None
    ops: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"task {self.task}: " if self.task else ""
        ops = f" [ops: {', '.join(self.ops)}]" if self.ops else ""
        return f"{self.check}: {where}{self.message}{ops}"

    def to_dict(self) -> dict[str, JsonValue]:
        return {"check": self.check, "task": self.task, "message": self.message, "ops": list(self.ops)}


@dataclass
class CheckResult:
    """One named check: how many things it examined and what it found."""

    name: str
    checked: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class CheckReport:
    """The verdict on a run: ``ok`` if no check found a violation."""

    checks: dict[str, CheckResult]
    #: ``{op: {outcome: n}}`` of the history checked
    ops: dict[str, dict[str, int]] = field(default_factory=dict)
    #: things worth knowing that are not violations (skipped ops, unattributed writes...)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    @property
    def violations(self) -> list[Violation]:
        return [v for c in self.checks.values() for v in c.violations]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{check: {"checked": n, "violations": m}}``."""
        return {n: {"checked": c.checked, "violations": len(c.violations)} for n, c in self.checks.items()}

    def to_dict(self) -> dict[str, JsonValue]:
        return {"ok": self.ok,
                "checks": {n: {"ok": c.ok, "checked": c.checked,
                               "violations": [v.to_dict() for v in c.violations]}
                           for n, c in self.checks.items()},
                "ops": {k: dict(v) for k, v in self.ops.items()}, "notes": list(self.notes)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        lines = [f"history check: {'ok' if self.ok else 'VIOLATIONS'}"]
        for name, c in self.checks.items():
            lines.append(f"  {name}: {'ok' if c.ok else f'{len(c.violations)} violation(s)'} "
                         f"({c.checked} checked)")
            lines.extend(f"    - {v}" for v in c.violations)
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _transition_kind(t: Transition) -> str | None:
    """Which operation writes a transition like ``t`` (None: the system did)."""
    if t.to is TaskStatus.CLAIMED:
        return "claim"
    if t.by is None:
        return None
    if t.to is TaskStatus.COMPLETED:
        return "complete"
    if t.reason.startswith("attempt ") and t.to in (TaskStatus.AVAILABLE, TaskStatus.FAILED):
        return "fail"
    if t.to is TaskStatus.AVAILABLE:
        return "release"
    return None


def _describe(t: Transition, i: int) -> str:
    return f"#{i} {t.to.value} by {t.by or 'system'} at {t.at:.6f}"


class _Checker:
    def __init__(self, history: History, state: FinalState, skew: float) -> None:
        self.history = history
        self.state = state
        self.skew = skew
        self.results = {name: CheckResult(name) for name in CHECKS}
        self.notes: list[str] = []
        self.ops_by_id = {o.id: o for o in history.ops}
        #: op id -> index of the transition it wrote, per task
        self.position: dict[str, int] = {}
        self.swarms = {o.swarm for o in history.ops if o.swarm}

    def flag(self, check: str, message: str, task: str | None = None, ops: Iterable[Op] = ()) -> None:
        self.results[check].violations.append(Violation(check, message, task, tuple(o.id for o in ops)))

    def within(self, at: float, op: Op) -> bool:
        return op.start - self.skew <= at <= op.finish + self.skew

    def before(self, y: Op, x: Op) -> bool:
        """Y returned before X was invoked (real-time order)."""
        return y.end is not None and y.end + self.skew < x.start

    # -- tasks ---------------------------------------------------------------------

    def run_tasks(self) -> None:
        by_task: dict[str, list[Op]] = defaultdict(list)
        for o in self.history.ops:
            if o.task is not None and o.op in (*TASK_OPS, "heartbeat"):
                by_task[o.task].append(o)
        claims_by_id: dict[str, list[Op]] = defaultdict(list)
        for o in self.history.of("claim"):
            if o.acknowledged and o.claim_id:
                claims_by_id[o.claim_id].append(o)
        for claim_id, same in claims_by_id.items():
            self.results["single_owner"].checked += 1
            if len(same) > 1:
                who = ", ".join(f"{o.swarm} on {o.task}" for o in same)
                self.flag("single_owner", f"claim_id {claim_id} was acknowledged to {len(same)} claims "
                          f"({who})", same[0].task, same)
        for task_id in sorted(set(by_task) | set(self.state.tasks)):
            self.run_task(task_id, by_task.get(task_id, []))

    def run_task(self, task_id: str, ops: list[Op]) -> None:
        task = self.state.tasks.get(task_id)
        if task is None:
            for o in ops:
                if o.acknowledged and o.op in TASK_OPS:
                    self.flag("no_lost_writes", f"acknowledged {o.op} on a task that is not on the board",
                              task_id, [o])
            return
        hist = task.history
        truncated = not hist or hist[0].reason != "created"
        horizon = hist[0].at if truncated and hist else -math.inf
        owner_of = self.match(task_id, hist, ops)
        self.check_lost(task_id, ops, horizon)
        self.check_owner(task_id, task, hist, ops, owner_of, truncated)
        self.check_once(task_id, task, hist, ops, owner_of, horizon)
        self.check_overlap(task_id, ops)
        self.check_order(task_id, ops)

    def match(self, task_id: str, hist: list[Transition], ops: list[Op]) -> dict[int, Op]:
        """Tie each transition to the operation that wrote it (acknowledged
        first, then unknown, then refused)."""
        owner_of: dict[int, Op] = {}
        used: set[str] = set()
        for i, t in enumerate(hist):
            kind = _transition_kind(t)
            if kind is None:
                continue
            candidates = [o for o in ops if o.op == kind and o.swarm == t.by and o.id not in used
                          and self.within(t.at, o)]
            if not candidates:
                if t.by in self.swarms:
                    self.notes.append(f"task {task_id}: transition {_describe(t, i)} matches no recorded "
                                      f"{kind} (made outside the recorder?)")
                continue
            best = min(candidates, key=lambda o: (_RANK[o.outcome], o.finish, o.start))
            used.add(best.id)
            owner_of[i] = best
            self.position[best.id] = i
            self.results["refusals_hold"].checked += 1
            if best.outcome is Outcome.FAIL:
                self.flag("refusals_hold", f"transition {_describe(t, i)} was written, but the only "
                          f"{kind} that could have written it was refused ({best.error})", task_id, [best])
        return owner_of

    def check_lost(self, task_id: str, ops: list[Op], horizon: float) -> None:
        for o in ops:
            if not o.acknowledged or o.op not in ("claim", "fail", "release"):
                continue
            self.results["no_lost_writes"].checked += 1
            if o.id in self.position:
                continue
            if o.finish < horizon:
                self.notes.append(f"task {task_id}: {o.describe()} predates the kept history; not checked")
                continue
            self.flag("no_lost_writes", f"acknowledged {o.op} by {o.swarm} is not in the task's history",
                      task_id, [o])

    def lease_end(self, t: Transition, claim: Op | None, ops: list[Op], ttl: float, until: float) -> float:
        """The least the lease of claim ``t`` ran to: TTL after the claim, or
        after an acknowledged heartbeat of it that began by ``until`` (one that
        began later was applied, if at all, after the next transition)."""
        end = t.at + ttl
        if claim is not None and claim.claim_id:
            for hb in ops:
                if hb.op == "heartbeat" and hb.acknowledged and hb.claim_id == claim.claim_id \
                        and hb.start <= until + self.skew:
                    end = max(end, hb.start + ttl)
        return end

    def check_owner(self, task_id: str, task: Task, hist: list[Transition], ops: list[Op],
                    owner_of: dict[int, Op], truncated: bool) -> None:
        ttl = self.state.lease_ttl
        result = self.results["single_owner"]
        last_claim: int | None = None
        for i, t in enumerate(hist):
            kind = _transition_kind(t)
            if t.to is TaskStatus.CLAIMED:
                last_claim = i
                result.checked += 1
                if ttl is None or i + 1 >= len(hist):
                    continue
                nxt = hist[i + 1]
                if nxt.by == t.by and _transition_kind(nxt) in ("complete", "fail", "release"):
                    continue
                claim = owner_of.get(i)
                end = self.lease_end(t, claim, ops, ttl, nxt.at)
                if nxt.at + self.skew < end:
                    involved = [o for o in (claim, owner_of.get(i + 1)) if o is not None]
                    self.flag("single_owner", f"claim {_describe(t, i)} was ended by {_describe(nxt, i + 1)} "
                              f"while its lease ran until {end:.6f} (two owners)", task_id, involved)
            elif kind in ("complete", "fail", "release"):
                result.checked += 1
                if i == 0 and truncated:
                    continue
                prev = hist[i - 1] if i else None
                if prev is None or prev.to is not TaskStatus.CLAIMED or prev.by != t.by:
                    was = _describe(prev, i - 1) if prev else "nothing"
                    self.flag("single_owner", f"{_describe(t, i)} by a swarm that did not hold the claim "
                              f"(previous transition: {was})", task_id,
                              [o for o in (owner_of.get(i),) if o is not None])
        if last_claim is None or task.status not in (TaskStatus.CLAIMED, TaskStatus.COMPLETED):
            return
        if task.status is TaskStatus.CLAIMED and task.owner != hist[last_claim].by:
            self.flag("single_owner", f"the record names {task.owner} as owner but the last claim is "
                      f"{_describe(hist[last_claim], last_claim)}", task_id)
        claim = owner_of.get(last_claim)
        if claim is not None and claim.acknowledged and task.claim_id and claim.claim_id \
                and task.claim_id != claim.claim_id:
            self.flag("single_owner", f"the record's claim_id {task.claim_id} is not the one acknowledged to "
                      f"the last claim ({claim.claim_id})", task_id, [claim])

    def check_overlap(self, task_id: str, ops: list[Op]) -> None:
        """Two acknowledged claims whose holders' ownership must have overlapped,
        whichever was linearized first (needs the lease TTL)."""
        ttl = self.state.lease_ttl
        if ttl is None:
            return
        claims = [o for o in ops if o.op == "claim" and o.acknowledged and o.claim_id]
        enders = [o for o in ops if o.op in ("complete", "fail", "release") and o.outcome is not Outcome.FAIL]
        # the lease ran at least TTL from the claim; the holder may have ended it sooner
        earliest_end = {p.id: min([p.start + ttl, *(o.start for o in enders if o.claim_id == p.claim_id or (
            o.claim_id is None and o.swarm == p.swarm))]) for p in claims}
        for n, p in enumerate(claims):
            for q in claims[n + 1:]:
                if p.claim_id == q.claim_id:
                    continue
                self.results["single_owner"].checked += 1
                if q.finish + self.skew < earliest_end[p.id] and p.finish + self.skew < earliest_end[q.id]:
                    self.flag("single_owner", f"claims by {p.swarm} and {q.swarm} were both acknowledged "
                              f"while the other's lease ({ttl:g} s) was live and unreleased: two owners",
                              task_id, [p, q])

    def check_once(self, task_id: str, task: Task, hist: list[Transition], ops: list[Op],
                   owner_of: dict[int, Op], horizon: float) -> None:
        result = self.results["exactly_once"]
        result.checked += 1
        done = [i for i, t in enumerate(hist) if t.to is TaskStatus.COMPLETED]
        if len(done) > 1:
            self.flag("exactly_once", f"completed {len(done)} times: "
                      + "; ".join(_describe(hist[i], i) for i in done), task_id,
                      [owner_of[i] for i in done if i in owner_of])
        if done and done[0] < len(hist) - 1:
            after = hist[done[0] + 1]
            self.flag("exactly_once", f"{_describe(after, done[0] + 1)} after the completion "
                      f"{_describe(hist[done[0]], done[0])}", task_id,
                      [o for o in (owner_of.get(done[0]), owner_of.get(done[0] + 1)) if o is not None])
        acked = [o for o in ops if o.op == "complete" and o.acknowledged]
        if len(acked) > 1:
            self.flag("exactly_once", f"{len(acked)} completions were acknowledged ("
                      + ", ".join(str(o.swarm) for o in acked) + ")", task_id, acked)
        for o in acked:
            i = self.position.get(o.id)
            if i is None:
                if o.finish < horizon:
                    self.notes.append(f"task {task_id}: {o.describe()} predates the kept history; "
                                      "not checked")
                    continue
                self.flag("exactly_once", f"acknowledged completion by {o.swarm} is not in the task's "
                          f"history (the task is {task.status.value})", task_id, [o])
                continue
            if o.claim_id and task.claim_id and task.claim_id != o.claim_id and i == len(hist) - 1:
                self.flag("exactly_once", f"completed under claim {task.claim_id}, but the acknowledged "
                          f"completion used claim {o.claim_id}", task_id, [o])

    def check_order(self, task_id: str, ops: list[Op]) -> None:
        result = self.results["no_stale_reads"]
        acked = [o for o in ops if o.acknowledged]
        claim_at = {o.claim_id: self.position[o.id] for o in acked
                    if o.op == "claim" and o.claim_id and o.id in self.position}

        def place(o: Op) -> float | None:
            if o.op == "heartbeat":
                i = claim_at.get(o.claim_id) if o.claim_id else None
                return None if i is None else i + 0.5
            i = self.position.get(o.id)
            return None if i is None else float(i)

        reported: set[tuple[str, str]] = set()
        for y in acked:
            if y.op != "complete":
                continue
            for x in acked:
                if x.op == "claim" and self.before(y, x):
                    result.checked += 1
                    reported.add((y.id, x.id))
                    self.flag("no_stale_reads", f"claim by {x.swarm} was acknowledged although the "
                              f"completion by {y.swarm} had been acknowledged before it began",
                              task_id, [y, x])
        placed = [(o, p) for o in acked if (p := place(o)) is not None]
        for y, py in placed:
            for x, px in placed:
                if x is y or not self.before(y, x) or (y.id, x.id) in reported:
                    continue
                result.checked += 1
                if py > px:
                    self.flag("no_stale_reads", f"{x.op} by {x.swarm} began after {y.op} by {y.swarm} had "
                              f"returned, yet took effect before it (transition {px:g} < {py:g}): it did not "
                              "see it", task_id, [y, x])

    # -- money -------------------------------------------------------------------------

    def run_money(self) -> None:
        ledger = {e.key: e for e in self.state.ledger}
        debits = self.history.of("debit")
        lost = self.results["no_lost_writes"]
        claimed: set[str] = set()
        for o in debits:
            if not o.acknowledged:
                continue
            lost.checked += 1
            entry = ledger.get(o.ledger_key or "")
            if entry is None:
                self.flag("no_lost_writes", f"acknowledged debit of {o.amount} by {o.swarm} has no ledger "
                          f"entry {o.ledger_key}", o.task, [o])
                continue
            claimed.add(entry.key)
            if entry.swarm_id != o.swarm or entry.cost_micros != o.amount:
                self.flag("no_lost_writes", f"ledger entry {entry.key} records {entry.cost_micros} for "
                          f"{entry.swarm_id}; the acknowledged debit was {o.amount} for {o.swarm}",
                          o.task, [o])
        pending = [o for o in debits if o.outcome is not Outcome.OK]
        landed = 0
        for e in sorted(self.state.ledger, key=lambda e: e.at):
            if e.key in claimed:
                continue
            fits = [o for o in pending if o.swarm == e.swarm_id and o.amount == e.cost_micros
                    and o.task == e.task_id and o.detail.get("operation", e.operation) == e.operation
                    and self.within(e.at, o)]
            if not fits:
                self.notes.append(f"ledger entry {e.key} ({e.cost_micros} for {e.swarm_id}) matches no "
                                  "recorded debit")
                continue
            best = min(fits, key=lambda o: (_RANK[o.outcome], o.finish))
            pending.remove(best)
            self.results["refusals_hold"].checked += 1
            if best.outcome is Outcome.FAIL:
                self.flag("refusals_hold", f"ledger entry {e.key} ({e.cost_micros} for {e.swarm_id}) was "
                          f"written by a debit reported as refused ({best.error})", best.task, [best])
            else:
                landed += 1
        unknown = [o for o in debits if o.outcome is Outcome.UNKNOWN]
        if unknown:
            self.notes.append(f"{len(unknown)} debit(s) of unknown outcome, {landed} of them in the ledger")
        result = self.results["money"]
        spent_by: dict[str, int] = defaultdict(int)
        for e in self.state.ledger:
            spent_by[e.swarm_id] += e.cost_micros
        for swarm in sorted(set(spent_by) - set(self.state.budgets)):
            result.checked += 1
            self.flag("money", f"ledger entries of {spent_by[swarm]} for {swarm}, which has no budget")
        for swarm, budget in sorted(self.state.budgets.items()):
            result.checked += 1
            base = self.state.initial_spent.get(swarm, 0)
            mine = [o for o in debits if o.swarm == swarm and o.amount is not None]
            acked = sum(o.amount or 0 for o in mine if o.acknowledged)
            maybe = sum(o.amount or 0 for o in mine if o.outcome is Outcome.UNKNOWN)
            spent = budget.spent_micros - base
            if spent != spent_by.get(swarm, 0):
                self.flag("money", f"budget of {swarm} has spent {budget.spent_micros} (from {base}), "
                          f"but its ledger entries sum to {spent_by.get(swarm, 0)}")
            if not acked <= spent <= acked + maybe:
                involved = [o for o in mine if o.outcome is not Outcome.FAIL]
                self.flag("money", f"budget of {swarm} has spent {spent} in the run, outside "
                          f"[{acked}, {acked + maybe}] (acknowledged debits .. plus unknown ones)",
                          None, involved if len(involved) <= 20 else [])

    # -- witness -------------------------------------------------------------------------

    def run_witness(self) -> None:
        result = self.results["witness"]
        if self.state.witness_entries is None:
            self.notes.append("the witness chain was not read: witness appends not checked")
            return
        report = self.state.witness_report
        if report is not None and not report.ok:
            self.flag("witness", f"verify failed at seq {report.first_bad_seq}: {report.problem}")
        entries = sorted(self.state.witness_entries, key=lambda e: e.seq)
        by_id: dict[str, list[WitnessEntry]] = defaultdict(list)
        prev, expected = GENESIS, 1
        for e in entries:
            result.checked += 1
            by_id[e.entry_id].append(e)
            problems = e.problems()
            if problems:
                self.flag("witness", f"entry {e.seq}: " + "; ".join(problems))
            if e.seq != expected:
                what = "a gap" if e.seq > expected else "a duplicate"
                self.flag("witness", f"entry seq {e.seq} where {expected} was expected ({what})")
            elif e.prev_hash != prev:
                self.flag("witness", f"entry {e.seq} does not link to entry {e.seq - 1}'s hash")
            prev, expected = e.hash, e.seq + 1
        for entry_id, same in by_id.items():
            if len(same) > 1:
                self.flag("witness", f"entry_id {entry_id} appears {len(same)} times (seqs "
                          + ", ".join(str(e.seq) for e in same) + ")")
        lost = self.results["no_lost_writes"]
        for o in self.history.of("witness_append"):
            if not o.acknowledged:
                continue
            lost.checked += 1
            found = by_id.get(o.entry_id or "")
            if not found:
                self.flag("no_lost_writes", f"acknowledged witness append {o.entry_id} (seq {o.seq}) is not "
                          "in the chain", None, [o])
            elif o.seq is not None and all(e.seq != o.seq for e in found):
                self.flag("witness", f"entry {o.entry_id} was acknowledged at seq {o.seq} but is at seq "
                          + ", ".join(str(e.seq) for e in found), None, [o])


def check(history: History, final_state: FinalState, *, skew: float = 0.005) -> CheckReport:
    """Check ``history`` against ``final_state``; see the module docs for each check.
    ``skew`` (seconds) is the clock tolerance between the recorder and the bus's writers."""
    c = _Checker(history, final_state, skew)
    c.run_tasks()
    c.run_money()
    c.run_witness()
    if history.partial_lines or history.bad_lines:
        c.notes.append(f"history: {history.partial_lines} line(s) cut short, {history.bad_lines} unreadable")
    return CheckReport(c.results, history.counts(), c.notes)
