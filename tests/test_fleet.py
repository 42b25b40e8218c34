"""The one assembly (``open_fleet``/``assemble``) on every backend: what a user
gets from the documented entry point is governed and witnessed, leases last
as claimed, one lifecycle pushes only through the policy, ``holding()``
notices a lost task, and an empty hand is explained."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from infrafabric import open_fleet
from infrafabric.bus import EventBus, connect
from infrafabric.bus.layout import push_subject, task_key
from infrafabric.coordinator import ClaimPolicy, IFCoordinator, TaskStatus
from infrafabric.errors import (
    BreakerOpenError,
    BudgetExhaustedError,
    BusTimeoutError,
    BusUnavailableError,
    InfraFabricError,
    SwarmStoppedError,
    TaskNotFoundError,
)
from infrafabric.fleet import Fleet, assemble
from infrafabric.governor import IFGovernor, ResourcePolicy, SwarmProfile, usd

GUARD = 15.0  # fails a test that hangs; never a latency assertion


@pytest.fixture
async def fleet(bus: EventBus) -> Fleet:
    return assemble(bus, actor="test", signer=None)


async def _failed_task(fleet: Fleet, task_id: str, swarm: str) -> None:
    """A task of ``swarm``'s capability that used up every attempt (the
    swarm's breaker is not tripped by them: the policy allows 10 in a row)."""
    coord = fleet.coordinator
    await fleet.governor.set_policy(ResourcePolicy(circuit_breaker_failure_threshold=10), by="test")
    await coord.create_task({"id": task_id, "title": "t", "capabilities": ["docs:markdown"]})
    for _ in range(coord.max_attempts):
        assert await coord.claim_task(swarm, task_id)
        await coord.fail_task(swarm, task_id, "boom")
    assert (await coord.get_task(task_id)).status is TaskStatus.FAILED


async def test_documented_entry_point_is_governed_and_witnessed(bus_url: str) -> None:
    async with open_fleet(bus_url, signer=None) as fleet:
        gov, coord = fleet.governor, fleet.coordinator
        await gov.register_swarm(SwarmProfile(id="s1", capabilities=["docs:markdown"]),
                                 budget_micros=usd("1"))
        await coord.create_tasks([{"id": f"T{i}", "title": "t", "capabilities": ["docs:markdown"]}
                                  for i in range(3)])
        await gov.trip("s1", "testing", by="ops")
        with pytest.raises(BreakerOpenError) as stopped:
            await coord.next_task("s1", wait=5)  # at once: waiting could not help
        assert "reset-circuit-breaker s1" in (stopped.value.hint or "")
        assert stopped.value.exit_code == 4
        refused = await coord.try_claim("s1", "T0")
        assert not refused.won and "circuit breaker open" in refused.reason
        await gov.reset_circuit_breaker("s1", by="ops", budget_micros=usd("0.01"))
        await gov.track_cost("s1", "llm_call", usd("0.02"))  # past the budget: the breaker trips again
        await gov.reset_circuit_breaker("s1", by="ops")  # closed, but the budget is still spent
        with pytest.raises(BudgetExhaustedError):
            await coord.next_task("s1")
        report = await fleet.witness.verify()
        assert report.ok
        ops = [(e.component, e.operation, e.actor) for e in await fleet.witness.get_operations()]
        assert ("IF.governor", "circuit_breaker_tripped", "s1") in ops
        assert ("IF.coordinator", "task_created", "test") not in ops  # no actor given: none stamped
        assert sum(op == "task_created" for _, op, _ in ops) == 3


async def test_another_process_on_the_documented_path_is_refused_too(engine_url: str) -> None:
    """The seeds' loop, run in its own process through ``open_fleet``: a swarm
    whose breaker another process opened claims nothing, and says why."""
    async with open_fleet(engine_url, signer=None) as fleet:
        await fleet.governor.register_swarm(SwarmProfile(id="s1", capabilities=["docs:markdown"]),
                                            budget_micros=usd("5"))
        await fleet.coordinator.create_task({"id": "T", "title": "t", "capabilities": ["docs:markdown"]})
        await fleet.governor.trip("s1", "looping on the same error", by="ops")
    script = textwrap.dedent(f"""
        import asyncio, json
        from infrafabric import open_fleet
        from infrafabric.errors import SwarmStoppedError

        async def main():
            async with open_fleet({engine_url!r}, signer=None) as fleet:
                claim = await fleet.coordinator.try_claim("s1", "T")
                try:
                    await fleet.coordinator.next_task("s1", wait=30)
                    stopped = None
                except SwarmStoppedError as exc:
                    stopped = type(exc).__name__
                print(json.dumps({{"won": claim.won, "reason": claim.reason, "stopped": stopped}}))

        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"won": False, "reason": "circuit breaker open: looping on the same error",
                      "stopped": "BreakerOpenError"}
    async with connect(engine_url) as bus:
        assert (await IFCoordinator(bus).get_task("T")).status is TaskStatus.AVAILABLE


async def test_a_heartbeat_renews_for_the_lease_claimed(fleet: Fleet, bus: EventBus) -> None:
    coord = fleet.coordinator
    await fleet.register_swarm("s1", ["docs:markdown"])
    await coord.create_task({"id": "T", "title": "t", "capabilities": ["docs:markdown"]})
    claim = await coord.next_task("s1", lease_ttl=60)
    assert claim is not None and claim.task is not None and claim.task.lease_ttl == 60
    # another process's coordinator, whose own default lease is 15 s, renews it
    other = assemble(bus, signer=None, lease_ttl=15)
    until = await other.coordinator.heartbeat("s1", "T", claim.claim_id)
    assert until - coord.clock() > 55
    # asked for, a heartbeat changes the claim's lease, and later beats keep it
    until = await other.coordinator.heartbeat("s1", "T", claim.claim_id, lease_ttl=120)
    assert until - coord.clock() > 115
    assert (await other.coordinator.get_task("T")).lease_ttl == 120
    until = await coord.heartbeat("s1", "T", claim.claim_id)
    assert until - coord.clock() > 115


async def test_a_reopened_task_is_pushed_through_the_policy(fleet: Fleet, bus: EventBus) -> None:
    gov, coord = fleet.governor, fleet.coordinator
    for sid in ("tripped", "ok"):
        await gov.register_swarm(SwarmProfile(id=sid, capabilities=["docs:markdown"]), budget_micros=usd("9"))
    await _failed_task(fleet, "R", "ok")
    await gov.trip("tripped", "testing", by="ops")
    async with coord.pushed_tasks("tripped") as tripped, coord.pushed_tasks("ok") as ok:
        reopened = await coord.reopen_task("R", by="alice", reason="flaky CI fixed")
        assert reopened.status is TaskStatus.AVAILABLE
        assert (await asyncio.wait_for(ok.get(), GUARD)).id == "R"
        await bus.publish(push_subject("tripped"), json.dumps({"id": "sentinel", "title": "s"}))
        first = await asyncio.wait_for(tripped.get(), GUARD)
        assert first.id == "sentinel"  # nothing came before it: the tripped swarm was never pushed R
    entry = [e for e in await fleet.witness.get_operations(operation="task_reopened")][-1]
    assert entry.actor == "alice" and entry.severity == "notice"


async def test_holding_reports_a_deleted_task(fleet: Fleet, bus: EventBus) -> None:
    coord = fleet.coordinator
    await fleet.register_swarm("s1")
    await coord.create_task({"id": "T", "title": "t"})
    claim = await coord.next_task("s1")
    assert claim is not None
    async with coord.holding("s1", "T", claim.claim_id, interval=0.05) as lost:
        assert not lost.is_set()
        assert await bus.delete(task_key("T"))
        await asyncio.wait_for(lost.wait(), GUARD)
        assert lost.reason is not None and "no task 'T'" in lost.reason
        assert isinstance(lost.error, TaskNotFoundError)
    # a claim already gone is reported at once
    async with coord.holding("s1", "T", claim.claim_id) as gone:
        assert gone.is_set() and gone.reason is not None and "no task" in gone.reason


async def test_holding_reports_a_claim_taken_over(bus: EventBus) -> None:
    coord = IFCoordinator(bus, lease_ttl=30)
    await coord.register_swarm("a")
    await coord.register_swarm("b")
    await coord.create_task({"id": "T", "title": "t"})
    first = await coord.try_claim("a", "T")
    async with coord.holding("a", "T", first.claim_id, interval=0.05) as lost:
        await coord.release_task("a", "T", first.claim_id)
        assert await coord.claim_task("b", "T")
        await asyncio.wait_for(lost.wait(), GUARD)
        assert lost.reason is not None and "does not hold the claim" in lost.reason


async def test_an_empty_hand_is_explained(fleet: Fleet) -> None:
    gov, coord = fleet.governor, fleet.coordinator
    await gov.register_swarm(SwarmProfile(id="me", capabilities=["docs:markdown"]), budget_micros=usd("9"))
    await fleet.register_swarm("rival", ["docs:markdown"])
    nothing = await coord.explain_empty("me")
    assert nothing.reason == "no_covered_task"
    await coord.create_tasks([
        {"id": "A", "title": "a", "capabilities": ["docs:markdown"]},
        {"id": "B", "title": "b", "capabilities": ["docs:markdown"], "dependencies": ["A"]},
        {"id": "R", "title": "rust", "capabilities": ["code-analysis:rust"]},
    ])
    assert await coord.claim_task("rival", "A")
    assert await coord.next_task("me") is None
    waiting = await coord.explain_empty("me")
    assert waiting.reason == "waiting" and waiting.stopped is None
    assert any(d.startswith("A: claimed by rival") for d in waiting.details), waiting.details
    assert "B: blocked by A" in waiting.details
    assert not any(d.startswith("R:") for d in waiting.details)  # not covered: not its concern
    await coord.complete_task("rival", "A")
    claim = await coord.next_task("me")
    assert claim is not None and claim.task_id == "B"
    await coord.complete_task("me", "B", claim_id=claim.claim_id)
    assert (await coord.explain_empty("me")).reason == "all_done"
    await gov.trip("me", "three failures in a row", by="governor")
    stopped = await coord.explain_empty("me")
    assert stopped.reason == "breaker_open" and isinstance(stopped.stopped, SwarmStoppedError)
    assert "three failures in a row" in stopped.summary
    assert stopped.as_dict()["hint"] == "ifctl governor reset-circuit-breaker me --budget USD"


async def test_completed_rows_import_as_completed_and_unblock(fleet: Fleet) -> None:
    coord = fleet.coordinator
    created = await coord.create_tasks(
        [{"id": "A", "title": "a"}, {"id": "B", "title": "b", "dependencies": ["A"]},
         {"id": "C", "title": "c", "dependencies": ["B"]}],
        completed={"A": "session-3"})
    status = {t.id: t.status for t in created}
    assert status == {"A": TaskStatus.COMPLETED, "B": TaskStatus.AVAILABLE, "C": TaskStatus.BLOCKED}
    a = await coord.get_task("A")
    assert a.history[-1].reason == "imported as completed" and a.history[-1].by == "session-3"
    await fleet.register_swarm("s")
    claim = await coord.next_task("s")
    assert claim is not None and claim.task_id == "B"  # the finished task is never handed out again


async def test_one_lifecycle_for_lapsed_leases(fleet: Fleet, bus: EventBus) -> None:
    """A lapsed lease goes through the same settling step: witnessed with the
    process that noticed as the actor (not the dead swarm), pushed through the policy."""
    gov, coord = fleet.governor, fleet.coordinator
    for sid in ("dead", "tripped", "ok"):
        await gov.register_swarm(SwarmProfile(id=sid, capabilities=["docs:markdown"]), budget_micros=usd("9"))
    await coord.create_task({"id": "T", "title": "t", "capabilities": ["docs:markdown"]})
    claim = await coord.try_claim("dead", "T", lease_ttl=0.2)
    assert claim.won
    await gov.trip("tripped", "testing", by="ops")
    async with coord.pushed_tasks("ok") as ok, coord.pushed_tasks("tripped") as tripped:
        await asyncio.sleep(0.3)  # past the lease: the claim has lapsed
        expired = await coord.expire_lease("T")
        assert expired is not None and expired.status is TaskStatus.AVAILABLE
        assert (await asyncio.wait_for(ok.get(), GUARD)).id == "T"
        await bus.publish(push_subject("tripped"), json.dumps({"id": "sentinel", "title": "s"}))
        assert (await asyncio.wait_for(tripped.get(), GUARD)).id == "sentinel"
    entry = (await fleet.witness.get_operations(operation="lease_expired"))[-1]
    assert entry.actor == "test" and entry.params["owner"] == "dead" and entry.severity == "warning"


def test_every_front_end_builds_through_the_assembly() -> None:
    """The CLI, the dashboard, the demo and the fault harness name no
    component constructor of their own: they call the assembly."""
    import pathlib
    import re

    root = pathlib.Path(__file__).parents[1] / "src/infrafabric"
    wiring = re.compile(r"\b(IFGovernor|IFChassis|IFCoordinator)\(")
    offenders = []
    for part in ("cli", "web", "demo"):
        for path in (root / part).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if wiring.search(line):
                    offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert offenders == []


def test_the_error_tree_tells_refusals_from_transport_failures() -> None:
    from infrafabric import errors as e

    refusals = (e.NotOwnerError, e.TaskNotFoundError, e.NotFoundError, e.TaskExistsError,
                e.InvalidStateError, e.BreakerOpenError, e.BudgetExhaustedError)
    for cls in refusals:
        assert issubclass(cls, e.RefusedError) and not issubclass(cls, e.BusError), cls
        assert not e.is_transient(cls("x") if cls not in (e.BreakerOpenError, e.BudgetExhaustedError)
                                  else cls("x", swarm_id="s"))
    for cls in (e.BusUnavailableError, e.BusTimeoutError, e.ConflictError):
        assert issubclass(cls, e.BusError) and e.is_transient(cls("x")), cls
    assert not e.is_transient(e.CorruptRecordError("x")) and not e.is_transient(ValueError("x"))
    assert e.BreakerOpenError("x", swarm_id="s").exit_code == 4
    assert issubclass(e.SwarmStoppedError, InfraFabricError)


async def test_every_front_end_signs_with_the_state_directorys_key(bus: EventBus, tmp_path: Any) -> None:
    """Checkpoint signing no longer depends on the front end: the assembly
    loads the state directory's key for the CLI, the dashboard and the demo alike."""
    from infrafabric.web import FleetView
    from infrafabric.witness import Signer

    assert assemble(bus, home=tmp_path).witness.signer is None  # no key there: nothing to sign with
    key = Signer.load_or_create(tmp_path)
    assert assemble(bus, home=tmp_path).witness.signer is not None
    dashboard = FleetView(bus, home=tmp_path).fleet("bob")
    assert dashboard.witness.signer is not None and dashboard.witness.signer.id == key.id
    assert dashboard.witness.actor == "bob"
    assert assemble(bus, home=tmp_path, signer=None).witness.signer is None


class _SlowAdmission(ClaimPolicy):
    """Holds every claim in the middle (after the read, before the write) until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def admit(self, swarm: Any, task: Any) -> str | None:
        self.entered.set()
        await self.go.wait()
        return None


class _Probe(IFCoordinator):
    """Says when next_task has listed the board (so what follows arrives by push)."""

    listed: asyncio.Event

    async def list_tasks(self) -> list[Any]:
        out = await super().list_tasks()
        self.listed.set()
        return out


async def test_a_claim_in_flight_outlives_the_wait_deadline(bus: EventBus) -> None:
    """next_task's deadline bounds the wait for a push, never a claim already
    under way: a claim cut off after its write landed was held by nobody until it
    lapsed (a live demo agent 'lost' tasks that way)."""
    policy = _SlowAdmission()
    coord = _Probe(bus, policy=policy, lease_ttl=30)
    coord.listed = asyncio.Event()
    await coord.register_swarm("s")
    hand = asyncio.create_task(coord.next_task("s", wait=0.2))
    await asyncio.wait_for(coord.listed.wait(), GUARD)
    await coord.create_task({"id": "T", "title": "t"})  # pushed: claimed from the push feed
    await asyncio.wait_for(policy.entered.wait(), GUARD)
    await asyncio.sleep(0.4)  # the wait's deadline passes while the claim is in the middle
    policy.go.set()
    outcome = await asyncio.wait_for(hand, GUARD)
    assert outcome is not None and outcome.won and outcome.task_id == "T"
    assert (await coord.get_task("T")).owner == "s"


async def test_a_cancelled_hand_out_gives_a_landed_claim_back(bus: EventBus) -> None:
    policy = _SlowAdmission()
    coord = IFCoordinator(bus, policy=policy, lease_ttl=30)
    await coord.register_swarm("s")
    await coord.create_task({"id": "T", "title": "t"})
    hand = asyncio.create_task(coord.next_task("s", wait=30))
    await asyncio.wait_for(policy.entered.wait(), GUARD)
    hand.cancel()  # e.g. the agent's tool call was cancelled while its claim was in flight
    await asyncio.sleep(0)
    policy.go.set()
    with pytest.raises(asyncio.CancelledError):
        await hand
    task = await coord.get_task("T")
    assert task.status is TaskStatus.AVAILABLE and task.owner is None
    assert [h.reason for h in task.history][-2:] == [
        "claimed", "the claimant was cancelled before it took the claim"]


class _LandThenTimeOut:
    """A bus whose next update of ``key`` is applied, then ``meanwhile`` runs
    (another writer), then the caller hears a timeout: an unknown outcome
    that in fact landed, and a record that moved on before the read-back."""

    def __init__(self, bus: EventBus, key: str, meanwhile: Any) -> None:
        self._bus, self._key, self._meanwhile = bus, key, meanwhile
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        rev = await self._bus.update(key, value, revision)
        if key.endswith(self._key) and rev is not None and not self.fired:
            self.fired = True
            await self._meanwhile()
            raise BusTimeoutError(f"update {key}: deadline missed (test)")
        return rev


async def test_a_landed_debit_is_not_applied_again_after_a_rival_wrote(bus: EventBus) -> None:
    gov = IFGovernor(bus)
    await gov.register_swarm(SwarmProfile(id="s", capabilities=[]), budget_micros=usd("1000"))
    rival = IFGovernor(bus)
    flaky = _LandThenTimeOut(bus, "gov/budgets/s", lambda: rival.track_cost("s", "b", 100))
    mine = IFGovernor(flaky)  # type: ignore[arg-type]
    await mine.track_cost("s", "a", 10)
    budget = await gov.budget("s")
    assert flaky.fired and budget is not None and budget.spent_micros == 110
    ledger = await gov.ledger()
    assert sorted(e["cost_micros"] for e in ledger) == [10, 100]


async def test_a_landed_failure_is_settled_once_after_a_rival_claimed(bus: EventBus) -> None:
    fleet = assemble(bus, signer=None)
    await fleet.register_swarm("a")
    await fleet.register_swarm("b")
    await fleet.coordinator.create_task({"id": "T", "title": "t"})
    claim = await fleet.coordinator.try_claim("a", "T")
    flaky = _LandThenTimeOut(bus, "tasks/T", lambda: fleet.coordinator.claim_task("b", "T"))
    other = assemble(flaky, signer=None)  # type: ignore[arg-type]
    failed = await other.coordinator.fail_task("a", "T", "red", claim.claim_id)
    assert flaky.fired and failed.owner == "b"  # what the task is now: b claimed it after a's failure
    task = await fleet.coordinator.get_task("T")
    assert [h.reason for h in task.history] == ["created", "claimed", "attempt 1 failed: red", "claimed"]
    assert (await fleet.governor.breaker("a")).consecutive_failures == 1  # counted, once
    failures = await fleet.witness.get_operations(operation="task_failed")
    assert [e.params["swarm_id"] for e in failures] == ["a"]  # witnessed, once


async def test_a_landed_claim_is_won_after_a_rival_read(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("a")
    await coord.create_task({"id": "T", "title": "t"})

    async def nothing() -> None:
        return None

    flaky = _LandThenTimeOut(bus, "tasks/T", nothing)
    outcome = await IFCoordinator(flaky).try_claim("a", "T")  # type: ignore[arg-type]
    assert flaky.fired and outcome.won and outcome.claim_id == (await coord.get_task("T")).claim_id


async def test_a_claim_survives_repeated_cancellation_without_an_orphan(bus: EventBus) -> None:
    policy = _SlowAdmission()
    coord = IFCoordinator(bus, policy=policy, lease_ttl=30)
    await coord.register_swarm("s")
    await coord.create_task({"id": "T", "title": "t"})
    hand = asyncio.create_task(coord.next_task("s", wait=30))
    await asyncio.wait_for(policy.entered.wait(), GUARD)
    for _ in range(3):  # cancel scopes cancel again at every await
        hand.cancel()
        await asyncio.sleep(0)
    policy.go.set()
    with pytest.raises(asyncio.CancelledError):
        await hand
    task = await coord.get_task("T")
    assert task.status is TaskStatus.AVAILABLE and task.owner is None


async def test_holding_reports_a_lease_that_ran_out_while_the_bus_was_away(bus: EventBus) -> None:
    class Cut(IFCoordinator):
        cut = False

        async def heartbeat(self, *args: Any, **kwargs: Any) -> float:
            if self.cut:
                raise BusUnavailableError("cannot reach the bus (test)")
            return await super().heartbeat(*args, **kwargs)

    coord = Cut(bus, lease_ttl=0.6)
    await coord.register_swarm("s")
    await coord.create_task({"id": "T", "title": "t"})
    claim = await coord.try_claim("s", "T")
    async with coord.holding("s", "T", claim.claim_id, interval=0.05) as lost:
        coord.cut = True
        await asyncio.wait_for(lost.wait(), GUARD)
    assert lost.reason is not None and "lapsed while heartbeats failed" in lost.reason


async def test_a_losing_claimer_is_not_queued_behind_a_slow_winner(bus: EventBus) -> None:
    """Claimers in one process do not take turns: the second hears its answer
    while the first is still in the middle of its claim."""
    class SlowFor(ClaimPolicy):
        def __init__(self) -> None:
            self.entered, self.go = asyncio.Event(), asyncio.Event()

        async def admit(self, swarm: Any, task: Any) -> str | None:
            if swarm.id == "slow":
                self.entered.set()
                await self.go.wait()
            return None

    policy = SlowFor()
    coord = IFCoordinator(bus, policy=policy)
    await coord.register_swarm("slow")
    await coord.register_swarm("fast")
    await coord.create_task({"id": "T", "title": "t"})
    slow = asyncio.create_task(coord.try_claim("slow", "T"))
    await asyncio.wait_for(policy.entered.wait(), GUARD)
    fast = await asyncio.wait_for(coord.try_claim("fast", "T"), GUARD)  # answered while slow is held
    assert fast.won
    policy.go.set()
    late = await asyncio.wait_for(slow, GUARD)
    assert not late.won and late.lost and "claimed by fast" in late.reason


def test_a_server_process_fits_the_garbage_collector_once_started() -> None:
    """``tune_gc`` (what ``ifctl mcp`` and the dashboard call once serving):
    what exists is frozen out of the collector's walks, young collections are
    rarer, and garbage made before is collected, not frozen. In a process of
    its own: freezing this test process would keep what the other tests drop."""
    probe = (
        "import gc, json\n"
        "from infrafabric.serving import YOUNG_THRESHOLD, tune_gc\n"
        "class Cycle: pass\n"
        "a, b = Cycle(), Cycle(); a.other, b.other = b, a\n"
        "import weakref; gone = weakref.ref(a); del a, b\n"
        "before = gc.get_threshold()\n"
        "tune_gc()\n"
        "print(json.dumps({'before': before, 'after': gc.get_threshold(), 'frozen': gc.get_freeze_count(),"
        " 'young': YOUNG_THRESHOLD, 'cycle_freed': gone() is None}))\n")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    got = json.loads(out)
    assert got["after"] == [got["young"], *got["before"][1:]] and got["after"] != got["before"]
    assert got["frozen"] > 1000 and got["cycle_freed"]
