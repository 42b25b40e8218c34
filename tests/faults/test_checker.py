"""The history checker on small hand-built histories: a clean run passes,
unknown outcomes are tolerated either way, and every planted violation is
caught by the check that owns it, naming the task and the operations."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from faultkit import CHECKS, FinalState, History, LedgerEntry, Op, Outcome, check
from infrafabric.coordinator import Task, TaskStatus, Transition
from infrafabric.governor.models import Budget
from infrafabric.witness.entry import GENESIS, WitnessEntry
from infrafabric.witness.log import VerifyReport

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN
TTL = 5.0
W: dict[str, Any] = {"operation": "w"}
_ids = itertools.count(1)

A, CL, DONE = TaskStatus.AVAILABLE, TaskStatus.CLAIMED, TaskStatus.COMPLETED


def op(kind: str, swarm: str, start: float, end: float | None, outcome: Outcome = OK, **kw: Any) -> Op:
    return Op(id=f"p:{next(_ids)}", process="p", op=kind, swarm=swarm, start=start, start_mono=start,
              end=end, end_mono=end, outcome=outcome, error=None if outcome is OK else "refused", **kw)


Step = tuple[float, TaskStatus, str | None, str]


def task(task_id: str, *steps: Step, claim_id: str | None = None) -> Task:
    history = [Transition(at=0.0, to=A, reason="created")]
    history += [Transition(at=at, to=to, by=by, reason=reason) for at, to, by, reason in steps]
    last = history[-1]
    owner = next((t.by for t in reversed(history) if t.to is CL), None) if last.to in (CL, DONE) else None
    return Task(id=task_id, title=task_id, status=last.to, owner=owner, claim_id=claim_id,
                history=history)


def chain(*ids: str) -> list[WitnessEntry]:
    out, prev = [], GENESIS
    for seq, entry_id in enumerate(ids, start=1):
        e = WitnessEntry.build(seq=seq, prev_hash=prev, component="agent", operation="work",
                               entry_id=entry_id, ts=seq * 1_000_000)
        out.append(e)
        prev = e.hash
    return out


def state(*tasks: Task, **kw: Any) -> FinalState:
    kw.setdefault("lease_ttl", TTL)
    return FinalState(tasks={t.id: t for t in tasks}, **kw)


def violations(report: Any, name: str) -> list[str]:
    return [str(v) for v in report.checks[name].violations]


def only(report: Any, *names: str) -> None:
    """Exactly the named checks failed."""
    failed = sorted(n for n, c in report.checks.items() if not c.ok)
    assert failed == sorted(names), str(report)


def clean_run() -> tuple[History, FinalState]:
    """Three tasks: a plain claim-work-complete, a release/fail/retry, and a
    lease that lapsed and was taken over (the late completion refused)."""
    ops = [
        c1 := op("claim", "a", 1.0, 2.0, task="T1", claim_id="c1"),
        op("heartbeat", "a", 2.1, 2.2, task="T1", claim_id="c1"),
        op("debit", "a", 2.3, 2.4, task="T1", amount=100, ledger_key="gov/ledger/1", detail=W),
        op("witness_append", "a", 2.5, 2.6, entry_id="e1", seq=1),
        op("complete", "a", 3.0, 4.0, task="T1", claim_id=c1.claim_id),
        op("claim", "b", 5.0, 6.0, FAIL, task="T1"),
        op("claim", "a", 1.0, 2.0, FAIL, task="T2"),
        op("claim", "b", 1.0, 2.0, task="T2", claim_id="c2"),
        op("release", "b", 2.0, 3.0, task="T2", claim_id="c2"),
        op("claim", "a", 4.0, 5.0, task="T2", claim_id="c3"),
        op("fail", "a", 6.0, 7.0, task="T2", claim_id="c3"),
        op("claim", "b", 8.0, 9.0, task="T2", claim_id="c4"),
        op("debit", "b", 9.1, 9.2, task="T2", amount=250, ledger_key="gov/ledger/2", detail=W),
        op("witness_append", "b", 9.3, 9.4, entry_id="e2", seq=2),
        op("complete", "b", 10.0, 11.0, task="T2", claim_id="c4"),
        op("claim", "a", 1.0, 2.0, task="T3", claim_id="c5"),
        op("heartbeat", "a", 3.0, 3.1, task="T3", claim_id="c5"),
        op("claim", "b", 8.5, 9.0, task="T3", claim_id="c6"),
        op("complete", "a", 9.5, 10.0, FAIL, task="T3", claim_id="c5"),
        op("heartbeat", "a", 9.6, 9.7, FAIL, task="T3", claim_id="c5"),
        op("complete", "b", 11.0, 12.0, task="T3", claim_id="c6"),
    ]
    final = state(
        task("T1", (1.5, CL, "a", "claimed"), (3.5, DONE, "a", "completed"), claim_id="c1"),
        task("T2", (1.5, CL, "b", "claimed"), (2.5, A, "b", "released"), (4.5, CL, "a", "claimed"),
             (6.5, A, "a", "attempt 1 failed: flaky"), (8.5, CL, "b", "claimed"),
             (10.5, DONE, "b", "completed"), claim_id="c4"),
        task("T3", (1.5, CL, "a", "claimed"), (8.6, CL, "b", "claimed"), (11.5, DONE, "b", "completed"),
             claim_id="c6"),
        budgets={"a": Budget(limit_micros=10_000, spent_micros=100),
                 "b": Budget(limit_micros=10_000, spent_micros=250)},
        ledger=[LedgerEntry("gov/ledger/1", "a", 100, "w", "T1", 2.35),
                LedgerEntry("gov/ledger/2", "b", 250, "w", "T2", 9.15)],
        witness_entries=chain("e1", "e2"), witness_report=VerifyReport(entries=2),
    )
    return History(ops=ops), final


def test_a_clean_history_passes_every_check() -> None:
    history, final = clean_run()
    report = check(history, final)
    assert report.ok, str(report)
    assert set(report.checks) == set(CHECKS)
    counts = report.counts()
    for name in CHECKS:
        assert counts[name]["checked"] > 0, name
        assert counts[name]["violations"] == 0
    assert report.ops["claim"] == {"ok": 6, "fail": 2}
    data = json.loads(report.to_json())
    assert data["ok"] is True and set(data["checks"]) == set(CHECKS)


def test_the_lease_check_needs_the_lease_to_have_lapsed() -> None:
    history, final = clean_run()
    final.lease_ttl = 10.0  # T3's takeover at 8.6 would now be inside a's lease (until 13.0)
    report = check(history, final)
    only(report, "single_owner")
    found = violations(report, "single_owner")
    assert any("task T3" in v and "lease ran until 13.000000" in v for v in found), found


def test_unknown_outcomes_are_tolerated_present_or_absent() -> None:
    ops = [
        op("claim", "a", 1.0, None, UNKNOWN, task="T1"),  # died mid-call; it landed
        op("claim", "b", 1.0, 2.0, UNKNOWN, task="T2"),  # timed out; it did not land
        op("claim", "a", 3.0, 4.0, task="T2", claim_id="c2"),
        op("complete", "a", 5.0, 6.0, UNKNOWN, task="T2", claim_id="c2"),  # landed
        op("debit", "a", 6.0, 7.0, UNKNOWN, amount=40, detail=W),  # landed
        op("debit", "a", 7.0, 8.0, UNKNOWN, amount=60, detail=W),  # did not
        op("debit", "a", 8.0, 9.0, amount=5, ledger_key="k3", detail=W),
        op("witness_append", "a", 9.0, 10.0, UNKNOWN),  # did not land
        op("witness_append", "b", 9.0, None, UNKNOWN),  # landed (the entry has an id we never learnt)
    ]
    final = state(
        task("T1", (1.5, CL, "a", "claimed"), claim_id="cx"),
        task("T2", (3.5, CL, "a", "claimed"), (5.5, DONE, "a", "completed"), claim_id="c2"),
        budgets={"a": Budget(limit_micros=1000, spent_micros=45)},
        ledger=[LedgerEntry("k1", "a", 40, "w", None, 6.5), LedgerEntry("k3", "a", 5, "w", None, 8.5)],
        witness_entries=chain("zz"), witness_report=VerifyReport(entries=1),
    )
    report = check(History(ops=ops), final)
    assert report.ok, str(report)
    assert any("2 debit(s) of unknown outcome, 1 of them in the ledger" in n for n in report.notes)


def test_double_claim_two_acknowledged_overlapping_claims() -> None:
    ops = [a := op("claim", "a", 1.0, 2.0, task="T", claim_id="c1"),
           b := op("claim", "b", 3.0, 4.0, task="T", claim_id="c2")]
    final = state(task("T", (1.5, CL, "a", "claimed"), (3.5, CL, "b", "claimed"), claim_id="c2"),
                  lease_ttl=15.0)
    report = check(History(ops=ops), final)
    only(report, "single_owner")
    found = report.checks["single_owner"].violations
    assert len(found) == 2  # the history shows it, and so do the clients' own windows
    assert all(v.task == "T" and set(v.ops) == {a.id, b.id} for v in found), found
    assert "two owners" in str(found[0]) and "two owners" in str(found[1])


def test_double_claim_seen_by_clients_even_when_only_one_claim_reached_the_store() -> None:
    ops = [a := op("claim", "a", 1.0, 2.0, task="T", claim_id="c1"),
           b := op("claim", "b", 1.5, 2.5, task="T", claim_id="c2")]
    final = state(task("T", (1.6, CL, "b", "claimed"), claim_id="c2"))
    report = check(History(ops=ops), final)
    only(report, "single_owner", "no_lost_writes")
    assert [v.ops for v in report.checks["no_lost_writes"].violations] == [(a.id,)]
    assert {a.id, b.id} == set(report.checks["single_owner"].violations[0].ops)


def test_same_claim_id_acknowledged_to_two_swarms() -> None:
    ops = [op("claim", "a", 1.0, 2.0, task="T", claim_id="dup"),
           op("claim", "b", 20.0, 21.0, task="T", claim_id="dup")]
    final = state(task("T", (1.5, CL, "a", "claimed"), (20.5, CL, "b", "claimed"), claim_id="dup"))
    report = check(History(ops=ops), final)
    only(report, "single_owner")
    found = violations(report, "single_owner")
    assert "claim_id dup was acknowledged to 2 claims (a on T, b on T)" in found[0]


@pytest.mark.parametrize("kind", ["claim", "debit", "witness"])
def test_lost_write_acknowledged_but_missing(kind: str) -> None:
    history, final = clean_run()
    if kind == "claim":
        t1 = final.tasks["T1"]
        final.tasks["T1"] = t1.model_copy(update={"history": t1.history[:1], "status": A, "claim_id": None})
        lost = next(o for o in history.ops if o.op == "claim" and o.task == "T1" and o.acknowledged)
    elif kind == "debit":
        final.ledger = final.ledger[1:]
        final.budgets["a"] = Budget(limit_micros=10_000, spent_micros=0)
        lost = next(o for o in history.ops if o.op == "debit" and o.swarm == "a")
    else:
        final.witness_entries = chain("e2")
        lost = next(o for o in history.ops if o.entry_id == "e1")
    report = check(history, final)
    found = report.checks["no_lost_writes"].violations
    assert [v.ops for v in found] == [(lost.id,)], str(report)
    if kind == "debit":
        only(report, "no_lost_writes", "money")  # spent 0 < the 100 acknowledged
    elif kind == "witness":
        only(report, "no_lost_writes", "witness")  # e2 is no longer at the seq it was told
    else:
        only(report, "no_lost_writes", "exactly_once")  # a's acknowledged completion is gone too


def test_stale_read_claim_acknowledged_after_an_acknowledged_completion() -> None:
    ops = [op("claim", "a", 1.0, 2.0, task="T", claim_id="c1"),
           done := op("complete", "a", 3.0, 4.0, task="T", claim_id="c1"),
           late := op("claim", "b", 5.0, 6.0, task="T", claim_id="c2")]
    final = state(task("T", (1.5, CL, "a", "claimed"), (3.5, DONE, "a", "completed"),
                       (5.5, CL, "b", "claimed"), claim_id="c2"))
    report = check(History(ops=ops), final)
    stale = report.checks["no_stale_reads"].violations
    assert len(stale) == 1 and stale[0].task == "T" and stale[0].ops == (done.id, late.id)
    assert "acknowledged although the completion by a had been acknowledged" in str(stale[0])
    assert any("after the completion" in v for v in violations(report, "exactly_once"))


def test_stale_read_old_claim_renewed_after_the_takeover_was_acknowledged() -> None:
    ops = [op("claim", "a", 1.0, 2.0, task="T", claim_id="c1"),
           take := op("claim", "b", 10.0, 11.0, task="T", claim_id="c2"),
           beat := op("heartbeat", "a", 12.0, 12.5, task="T", claim_id="c1")]
    final = state(task("T", (1.5, CL, "a", "claimed"), (10.5, CL, "b", "claimed"), claim_id="c2"))
    report = check(History(ops=ops), final)
    only(report, "no_stale_reads")
    assert [v.ops for v in report.checks["no_stale_reads"].violations] == [(take.id, beat.id)]


def test_money_spent_does_not_match_the_ledger() -> None:
    history, final = clean_run()
    final.budgets["a"] = Budget(limit_micros=10_000, spent_micros=130)  # a lost update, or a double debit
    report = check(history, final)
    only(report, "money")
    found = violations(report, "money")
    assert any("budget of a has spent 130 (from 0), but its ledger entries sum to 100" in v for v in found)
    assert any("outside [100, 100]" in v for v in found)


def test_money_ledger_agrees_but_more_was_spent_than_was_ever_debited() -> None:
    history, final = clean_run()
    final.ledger.append(LedgerEntry("gov/ledger/9", "a", 70, "w", None, 50.0))
    final.budgets["a"] = Budget(limit_micros=10_000, spent_micros=170)
    report = check(history, final)
    only(report, "money")
    assert any("spent 170 in the run, outside [100, 100]" in v for v in violations(report, "money"))
    assert any("gov/ledger/9" in n and "matches no recorded debit" in n for n in report.notes)


def test_double_completion() -> None:
    ops = [op("claim", "a", 1.0, 2.0, task="T", claim_id="c1"),
           ca := op("complete", "a", 3.0, 4.0, task="T", claim_id="c1"),
           op("claim", "b", 1.0, 2.0, FAIL, task="T"),
           cb := op("complete", "b", 3.0, 4.0, task="T", claim_id="c1")]
    final = state(task("T", (1.5, CL, "a", "claimed"), (3.5, DONE, "a", "completed"),
                       (3.6, DONE, "b", "completed"), claim_id="c1"))
    report = check(History(ops=ops), final)
    found = violations(report, "exactly_once")
    assert any("completed 2 times" in v for v in found), found
    assert any("2 completions were acknowledged (a, b)" in v and ca.id in v and cb.id in v for v in found)
    assert any("by a swarm that did not hold the claim" in v for v in violations(report, "single_owner"))


def test_a_refused_claim_that_took_effect() -> None:
    ops = [refused := op("claim", "a", 1.0, 2.0, FAIL, task="T")]
    final = state(task("T", (1.5, CL, "a", "claimed"), claim_id="c1"))
    report = check(History(ops=ops), final)
    only(report, "refusals_hold")
    assert report.checks["refusals_hold"].violations[0].ops == (refused.id,)


def test_witness_chain_problems() -> None:
    history, final = clean_run()
    e1, e2 = final.witness_entries
    final.witness_entries = [e1, e2, WitnessEntry.build(seq=4, prev_hash=e2.hash, component="x",
                                                          operation="y", entry_id="e1")]
    final.witness_report = VerifyReport(ok=False, entries=2, first_bad_seq=3, problem="entry 3 is missing")
    report = check(history, final)
    only(report, "witness")
    found = violations(report, "witness")
    assert any("verify failed at seq 3" in v for v in found)
    assert any("entry seq 4 where 3 was expected (a gap)" in v for v in found)
    assert any("entry_id e1 appears 2 times" in v for v in found)


def test_report_json_lists_each_violation_with_its_ids() -> None:
    ops = [a := op("claim", "a", 1.0, 2.0, task="T", claim_id="c1")]
    report = check(History(ops=ops), state(task("T")))
    data = json.loads(report.to_json())
    assert data["ok"] is False
    assert data["checks"]["no_lost_writes"]["violations"] == [
        {"check": "no_lost_writes", "task": "T", "ops": [a.id],
         "message": "acknowledged claim by a is not in the task's history"}]
    assert "no_lost_writes: 1 violation(s)" in str(report)
