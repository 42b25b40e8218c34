"""The coordinator on every backend (memory, NATS, etcd — real servers)."""

from __future__ import annotations

import asyncio

import pytest

from infrafabric.bus import EventBus, connect
from infrafabric.coordinator import IFCoordinator, TaskKind, TaskStatus
from infrafabric.errors import (
    ConfigurationError,
    InvalidStateError,
    NotOwnerError,
    TaskExistsError,
    TaskNotFoundError,
)

GUARD = 10.0  # fails a test that hangs; never a latency assertion


@pytest.fixture
def coord(bus: EventBus) -> IFCoordinator:
    return IFCoordinator(bus, lease_ttl=30)


async def test_full_task_lifecycle(coord: IFCoordinator) -> None:
    """The seed's P0.1.5 scenario: register -> create -> claim -> owner -> complete."""
    await coord.register_swarm("swarm-1", ["code-analysis:python"])
    task = await coord.create_task({"id": "task-1", "title": "review",
                                    "capabilities": ["code-analysis:python"]})
    assert task.status is TaskStatus.AVAILABLE
    assert await coord.claim_task("swarm-1", "task-1") is True
    assert await coord.get_task_owner("task-1") == "swarm-1"
    done = await coord.complete_task("swarm-1", "task-1", {"result": "done"})
    assert done.status is TaskStatus.COMPLETED and done.result == {"result": "done"}
    assert await coord.get_task_owner("task-1") is None
    assert [h.to for h in done.history] == [TaskStatus.AVAILABLE, TaskStatus.CLAIMED,
                                            TaskStatus.COMPLETED]


async def test_two_swarms_one_task_exactly_one_wins(bus_url: str) -> None:
    async with connect(bus_url) as b1, connect(bus_url) as b2:
        c1, c2 = IFCoordinator(b1), IFCoordinator(b2)
        await c1.register_swarm("swarm-1")
        await c1.register_swarm("swarm-2")
        await c1.create_task({"id": "task-1", "title": "contended"})
        results = await asyncio.gather(c1.claim_task("swarm-1", "task-1"),
                                       c2.claim_task("swarm-2", "task-1"))
        assert sorted(results) == [False, True]
        loser = c1 if results[0] is False else c2
        assert loser.last_claim is not None and "claimed by" in loser.last_claim.reason
        winner = "swarm-1" if results[0] else "swarm-2"
        assert await c1.get_task_owner("task-1") == winner


async def test_a_lagging_watched_copy_never_wins_a_claim(bus: EventBus) -> None:
    """A long-lived coordinator swaps on its watcher's copy of an available
    task without reading it first. A copy behind the bus loses the swap and
    the claim decides on the task as it is: one claimed elsewhere is refused
    (never claimed twice), one still available at a newer revision is won."""
    other = IFCoordinator(bus)
    for name in ("a", "b"):
        await other.register_swarm(name)
    await other.register_swarm("py", ["code:python"])
    await other.create_tasks([{"id": f"T{i}", "title": "x"} for i in (1, 2, 3)]
                             + [{"id": "T4", "title": "py", "capabilities": ["code:python"]}])
    async with IFCoordinator(bus) as lived:
        assert lived._claimable_copy("T1") is not None and lived._claimable_copy("T2") is not None
        current = await lived.try_claim("b", "T3")  # an up-to-date copy: its revision is the task's
        assert current.won and "compare-and-swap lost; re-reading" not in current.checks
        assert lived._watcher is not None
        lived._watcher.cancel()  # its copy stops here: behind the bus from now on
        with pytest.raises(asyncio.CancelledError):
            await lived._watcher
        assert (await other.try_claim("a", "T1")).won
        held = await other.try_claim("a", "T2")
        await other.release_task("a", "T2", held.claim_id)  # available again, at a newer revision

        refused = await lived.try_claim("b", "T1")
        assert not refused.won and refused.lost and "claimed by a" in refused.reason
        assert "compare-and-swap lost; re-reading" in refused.checks
        assert (await other.get_task("T1")).owner == "a"
        won = await lived.try_claim("b", "T2")
        assert won.won and "compare-and-swap lost; re-reading" in won.checks
        assert (await other.get_task("T2")).owner == "b"
        # a refusal is never decided on the copy alone: "b" lacks the capability, but the task
        # as it is says why first (claimed), as a claim that read it would
        assert (await other.try_claim("py", "T4")).won
        late = await lived.try_claim("b", "T4")
        assert not late.won and late.lost and "claimed by py" in late.reason, late.reason


async def test_dependencies_derive_status_and_completion_unblocks(coord: IFCoordinator) -> None:
    await coord.register_swarm("s")
    await coord.create_tasks([
        {"id": "A", "title": "a"},
        {"id": "B", "title": "b", "dependencies": ["A"]},
        {"id": "C", "title": "c", "dependencies": ["A", "B"]},
    ])
    assert [(t.id, t.status) for t in await coord.list_tasks()] == [
        ("A", TaskStatus.AVAILABLE), ("B", TaskStatus.BLOCKED), ("C", TaskStatus.BLOCKED)]
    assert not await coord.claim_task("s", "B")
    assert coord.last_claim is not None and "waiting on dependencies: A" in coord.last_claim.reason
    assert await coord.claim_task("s", "A")
    await coord.complete_task("s", "A")
    assert (await coord.get_task("B")).status is TaskStatus.AVAILABLE
    assert (await coord.get_task("C")).status is TaskStatus.BLOCKED


async def test_fencing_refuses_stale_owners(coord: IFCoordinator) -> None:
    await coord.register_swarm("s1")
    await coord.register_swarm("s2")
    await coord.create_task({"id": "T", "title": "t"})
    first = await coord.try_claim("s1", "T")
    assert first.won and first.claim_id
    await coord.release_task("s1", "T", first.claim_id)
    second = await coord.try_claim("s2", "T")
    assert second.won
    with pytest.raises(NotOwnerError, match="does not hold the claim"):
        await coord.complete_task("s1", "T", "late")
    with pytest.raises(NotOwnerError):
        await coord.heartbeat("s1", "T")
    again = await coord.try_claim("s1", "T")
    assert not again.won
    # the same swarm with a stale token is refused too
    await coord.release_task("s2", "T", second.claim_id)
    third = await coord.try_claim("s2", "T")
    with pytest.raises(NotOwnerError, match="stale"):
        await coord.complete_task("s2", "T", "x", claim_id=second.claim_id)
    await coord.complete_task("s2", "T", "ok", claim_id=third.claim_id)


async def test_lapsed_lease_is_reclaimed_and_pushed(bus_url: str) -> None:
    async with connect(bus_url) as bus:
        watcher = IFCoordinator(bus, lease_ttl=0.5)
        await watcher.register_swarm("dead")
        await watcher.register_swarm("alive")
        await watcher.create_task({"id": "T", "title": "t"})
        assert await watcher.claim_task("dead", "T")
        async with watcher, watcher.pushed_tasks("alive") as pushed:
            task = await pushed.get(GUARD)  # the lease lapses; the watcher pushes it
            assert task.id == "T" and task.status is TaskStatus.AVAILABLE
            assert "lease of dead lapsed" in task.history[-1].reason
            assert await watcher.claim_task("alive", "T")


async def test_fail_retries_then_fails(coord: IFCoordinator) -> None:
    await coord.register_swarm("s")
    await coord.create_task({"id": "T", "title": "t"})
    for attempt in (1, 2):
        assert await coord.claim_task("s", "T")
        task = await coord.fail_task("s", "T", f"boom {attempt}")
        assert task.status is TaskStatus.AVAILABLE and task.attempts == attempt
    assert await coord.claim_task("s", "T")
    task = await coord.fail_task("s", "T", "boom 3")
    assert task.status is TaskStatus.FAILED and task.error == "boom 3"
    assert not await coord.claim_task("s", "T")


async def test_a_failed_task_can_be_reopened(coord: IFCoordinator) -> None:
    seen: list[tuple[str, dict[str, object]]] = []

    async def observe(operation: str, params: dict[str, object]) -> None:
        seen.append((operation, params))

    coord.observers.append(observe)
    await coord.register_swarm("s")
    await coord.create_task({"id": "R", "title": "t"})
    with pytest.raises(InvalidStateError, match="R is available, not failed"):
        await coord.reopen_task("R", by="alice")
    with pytest.raises(TaskNotFoundError):
        await coord.reopen_task("nope", by="alice")
    for _ in range(3):
        assert await coord.claim_task("s", "R")
        await coord.fail_task("s", "R", "boom")
    assert (await coord.get_task("R")).status is TaskStatus.FAILED
    async with coord.pushed_tasks("s") as feed:
        task = await coord.reopen_task("R", by="alice", reason="flaky CI fixed")
        assert (task.status, task.attempts, task.error, task.owner) == (TaskStatus.AVAILABLE, 0, None, None)
        last = task.history[-1]
        assert (last.by, last.reason) == ("alice", "reopened by alice: flaky CI fixed")
        pushed = await feed.get(timeout=10)
        assert pushed is not None and pushed.id == "R"
    assert ("task_reopened", {"task_id": "R", "by": "alice", "reason": "flaky CI fixed",
                              "status": "available"}) in seen
    assert await coord.claim_task("s", "R")  # a full set of attempts again
    with pytest.raises(InvalidStateError, match="R is claimed"):
        await coord.reopen_task("R", by="alice")


async def test_max_attempts_is_set_per_coordinator(coord: IFCoordinator) -> None:
    patient = IFCoordinator(coord.bus, max_attempts=5)
    await patient.register_swarm("s")
    await patient.create_task({"id": "M", "title": "t"})
    for _ in range(4):
        assert await patient.claim_task("s", "M")
        assert (await patient.fail_task("s", "M", "boom")).status is TaskStatus.AVAILABLE
    assert await patient.claim_task("s", "M")
    assert (await patient.fail_task("s", "M", "boom")).status is TaskStatus.FAILED
    with pytest.raises(ConfigurationError):
        IFCoordinator(coord.bus, max_attempts=0)


async def test_claim_refusals_have_reasons(coord: IFCoordinator) -> None:
    await coord.register_swarm("py", ["python"])
    await coord.create_task({"id": "R", "title": "rust work", "capabilities": ["rust", "wasm"]})
    assert not await coord.claim_task("ghost", "R")
    assert coord.last_claim is not None and "not registered" in coord.last_claim.reason
    assert not await coord.claim_task("py", "R")
    assert "coverage 0%" in coord.last_claim.reason and "rust" in coord.last_claim.reason
    assert not await coord.claim_task("py", "nope")
    assert "no task 'nope'" in coord.last_claim.reason
    with pytest.raises(TaskExistsError):
        await coord.create_task({"id": "R", "title": "again"})
    with pytest.raises(TaskNotFoundError):
        await coord.create_task({"id": "X", "title": "x", "dependencies": ["missing"]})


async def test_next_task_prefers_critical_then_priority(coord: IFCoordinator) -> None:
    await coord.register_swarm("s")
    await coord.create_tasks([
        {"id": "F1", "title": "filler", "kind": "filler", "priority": 9},
        {"id": "C1", "title": "low", "priority": 1},
        {"id": "C2", "title": "high", "priority": 5},
    ])
    order = []
    while (outcome := await coord.next_task("s", wait=0)) is not None:
        order.append(outcome.task_id)
        await coord.complete_task("s", outcome.task_id)
    assert order == ["C2", "C1", "F1"]
    assert (await coord.get_task("F1")).kind is TaskKind.FILLER


async def test_next_task_waits_for_push(bus_url: str) -> None:
    async with connect(bus_url) as a, connect(bus_url) as b:
        agent, orchestrator = IFCoordinator(a), IFCoordinator(b)
        await orchestrator.register_swarm("s")
        waiting = asyncio.create_task(agent.next_task("s", wait=GUARD))
        await asyncio.sleep(0.3)  # let the agent subscribe; the push must not be missed either way
        await orchestrator.create_task({"id": "late", "title": "arrives later"})
        outcome = await waiting
        assert outcome is not None and outcome.won and outcome.task_id == "late"


async def test_blocker_reaches_orchestrator(coord: IFCoordinator) -> None:
    async with coord.blockers() as blockers:
        await coord.detect_blocker("swarm-1", {"task": "P0.1.2", "why": "etcd down"})
        report = await blockers.get(GUARD)
    assert report["swarm_id"] == "swarm-1" and report["blocker_info"]["why"] == "etcd down"


async def test_events_stream_every_transition(coord: IFCoordinator) -> None:
    async with coord.events() as events:
        await coord.register_swarm("s")
        await coord.create_task({"id": "E", "title": "e"})
        assert await coord.claim_task("s", "E")
        await coord.heartbeat("s", "E")  # not a transition
        await coord.complete_task("s", "E")
        collected = [await events.get(GUARD) for _ in range(3)]
    assert [(e.task_id, e.status, e.previous) for e in collected] == [
        ("E", TaskStatus.AVAILABLE, None), ("E", TaskStatus.CLAIMED, TaskStatus.AVAILABLE),
        ("E", TaskStatus.COMPLETED, TaskStatus.CLAIMED)]
    assert collected[1].owner == "s" and collected[2].by == "s"
