"""[5/9] The ready index: a hand-out reads a bounded number of records.

On every backend: ``next_task`` (governed and witnessed, as agents call it)
reads the same records whatever the board's size and never lists the board;
blocked tasks cost no claim attempt; the index follows every transition that
makes a task available (creation, release, failure with attempts left, a
lapse, reopening, dependencies completing) and forgets deleted tasks; an
offer whose task write never landed (a crash between the two writes) is
voided after the grace period, and an allocated slot never written is
closed. Across processes on NATS and etcd: agents draining one board do each
task once, and a writer killed (SIGKILL) between its writes loses nothing.
A hypothesis state machine checks, after every step, that every available
task is indexed and that a hand-out finds work exactly when some is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from infrafabric.bus import EventBus, connect, from_url
from infrafabric.bus.layout import READY_SLOTS, TASKS, WAITING
from infrafabric.coordinator import IFCoordinator, Task, TaskStatus
from infrafabric.coordinator.ready import GRACE, WINDOW, Lane, Slot, band_of, lane_of
from infrafabric.errors import NotOwnerError
from infrafabric.fleet import assemble
from support import Clock

WORKER = str(Path(__file__).with_name("ready_worker.py"))
GUARD = 10.0  # fails a test that hangs; never a latency assertion


class Reads:
    """Counts what the bus is asked to read (gets by key prefix, listings)."""

    def __init__(self, bus: EventBus) -> None:
        self.gets: Counter[str] = Counter()
        self.lists: list[str] = []
        get, list_, scan = bus.get, bus.list, bus.scan

        async def counted_get(key: str) -> Any:
            self.gets[key.split("/", 1)[0]] += 1
            self.keys.append(key)
            return await get(key)

        async def counted_list(prefix: str = "") -> Any:
            self.lists.append(prefix)
            return await list_(prefix)

        def counted_scan(prefix: str = "", **kw: Any) -> Any:
            self.lists.append(prefix)
            return scan(prefix, **kw)

        self.keys: list[str] = []
        bus.get = counted_get  # type: ignore[method-assign]
        bus.list = counted_list  # type: ignore[method-assign]
        bus.scan = counted_scan  # type: ignore[method-assign]

    def reset(self) -> None:
        self.gets.clear()
        self.lists.clear()
        self.keys.clear()

    @property
    def total(self) -> int:
        return sum(self.gets.values()) + len(self.lists)


async def _filled(bus: EventBus, n: int, **extra: Any) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("worker", ["code:python"])
    await coord.create_tasks([{"id": f"t{i:05d}", "title": f"task {i}", "capabilities": ["code:python"],
                               **extra} for i in range(n)])


async def test_a_governed_hand_out_reads_the_same_records_at_any_board_size(bus_url: str) -> None:
    reads: dict[int, int] = {}
    for n in (100, 600):
        url = bus_url.replace("namespace=", f"namespace=s{n}")
        async with connect(url) as bus:
            await _filled(bus, n)
            fleet = assemble(bus, actor="worker", signer=None)
            try:
                await fleet.coordinator.next_task("worker")  # warm: the governor's first reads
                counter = Reads(bus)
                for _ in range(3):
                    counter.reset()
                    got = await fleet.coordinator.next_task("worker")
                    assert got is not None and got.won
                    assert TASKS not in counter.lists and "" not in counter.lists, counter.lists
                    assert all(not p.startswith(READY_SLOTS) for p in counter.lists), counter.lists
                    assert counter.gets["tasks"] <= 2, counter.keys  # the task claimed (and a re-read)
                reads[n] = counter.total
            finally:
                await fleet.close()
    assert reads[600] <= reads[100] + 2, reads


async def test_an_import_with_nobody_waiting_reads_nothing_per_task_to_push(bus: EventBus) -> None:
    """A governed import reads who waits once for the whole batch; with nobody
    waiting, no task of it reads the policy or anyone's records to push."""
    fleet = assemble(bus, actor="importer", signer=None)
    try:
        counter = Reads(bus)
        await fleet.coordinator.create_tasks([{"id": f"i{i:03d}", "title": "x"} for i in range(60)])
        assert counter.gets["gov"] <= 2 and counter.gets["swarms"] == 0, counter.gets
        assert counter.lists.count(WAITING) == 1, counter.lists
    finally:
        await fleet.close()


async def test_a_hand_out_sends_its_tidying_after_its_claim(bus: EventBus) -> None:
    """Moving a lane's head past dead slots (and deleting them) is sent once the
    hand-out's compare-and-swap is back, not before: an engine commits writes
    in turn, and the claim would wait for them."""
    await _filled(bus, 6)
    first = IFCoordinator(bus)
    for _ in range(2):  # two slots at the head, claimed from and marked dead
        assert await first.next_task("worker") is not None
    await first.ready.settle(GUARD)
    writes: list[tuple[str, str]] = []
    for name in ("update", "put", "delete", "create"):
        def recording(call: Callable[..., Awaitable[Any]], name: str = name) -> Callable[..., Awaitable[Any]]:
            async def recorded(key: str, *args: Any, **kw: Any) -> Any:
                writes.append(("sent", key))
                try:
                    return await call(key, *args, **kw)
                finally:
                    writes.append(("back", key))
            return recorded
        setattr(bus, name, recording(getattr(bus, name)))
    later = IFCoordinator(bus)  # knows nothing: reads the two dead slots, and moves the head past them
    got = await later.next_task("worker")
    assert got is not None and got.task_id == "t00002"
    await later.ready.settle(GUARD)
    claim = writes.index(("back", f"{TASKS}t00002"))
    tidying = [i for i, (what, key) in enumerate(writes) if what == "sent" and key.startswith("ready/")]
    assert tidying and min(tidying) > claim, writes


async def test_blocked_tasks_cost_no_claim_attempt(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("worker")
    blocked = [{"id": f"b{i:03d}", "title": "blocked", "priority": 9, "dependencies": ["gate"]}
               for i in range(150)]
    await coord.create_tasks([{"id": "gate", "title": "gate", "priority": -5}, *blocked])
    counter = Reads(bus)
    got = await coord.next_task("worker")
    assert got is not None and got.task_id == "gate"
    assert not [k for k in counter.keys if k.startswith("tasks/b")], "a blocked task was read"


async def test_hand_out_order_critical_then_priority(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("worker")
    await coord.create_tasks([
        {"id": "filler-high", "title": "x", "kind": "filler", "priority": 99},
        {"id": "crit-low", "title": "x", "priority": 1},
        {"id": "crit-high", "title": "x", "priority": 7},
    ])
    order = []
    while (got := await coord.next_task("worker")) is not None:
        order.append(got.task_id)
    assert order == ["crit-high", "crit-low", "filler-high"]


async def test_a_swarm_is_offered_only_lanes_it_covers(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("py", ["code:python"])
    await coord.register_swarm("ops", ["ops:k8s"])
    await coord.create_tasks([{"id": "deploy", "title": "x", "capabilities": ["ops:k8s"], "priority": 5},
                              {"id": "code", "title": "x", "capabilities": ["code:python"]}])
    counter = Reads(bus)
    got = await coord.next_task("py")
    assert got is not None and got.task_id == "code"
    assert "tasks/deploy" not in counter.keys


async def _no_unindexed(coord: IFCoordinator) -> None:
    board = await coord.list_tasks()
    assert await coord.ready.unindexed(board) == [], [t.id for t in board if t.status is TaskStatus.AVAILABLE]


async def test_the_index_follows_every_transition_to_available(bus: EventBus) -> None:
    clock = Clock(1_000_000.0)
    coord = IFCoordinator(bus, clock=clock, lease_ttl=10, max_attempts=5)
    await coord.register_swarm("a")
    await coord.create_tasks([{"id": "root", "title": "x"}, {"id": "solo", "title": "x"},
                              {"id": "leaf", "title": "x", "dependencies": ["root"]}])
    await coord.create_task({"id": "late", "title": "x", "dependencies": ["root"]})
    await _no_unindexed(coord)

    got = await coord.next_task("a")
    assert got is not None
    await coord.release_task("a", got.task_id, got.claim_id)  # release: offered again
    await _no_unindexed(coord)
    got = await coord.next_task("a")
    assert got is not None
    await coord.fail_task("a", got.task_id, "flaky", got.claim_id)  # attempts left: offered again
    await _no_unindexed(coord)
    got = await coord.next_task("a")
    assert got is not None
    clock.now += 11
    assert (await coord.expire_lease(got.task_id)) is not None  # a lapse: offered again
    await _no_unindexed(coord)

    handed = []
    while (got := await coord.next_task("a")) is not None:
        handed.append(got.task_id)
        await coord.complete_task("a", got.task_id, None, got.claim_id)  # root unblocks leaf and late
        await _no_unindexed(coord)
    assert sorted(handed) == ["late", "leaf", "root", "solo"]

    doomed = IFCoordinator(bus, clock=clock, max_attempts=1)
    await doomed.create_task({"id": "once", "title": "x"})
    got = await doomed.next_task("a")
    assert got is not None and got.task_id == "once"
    await doomed.fail_task("a", "once", "broken", got.claim_id)
    assert (await coord.get_task("once")).status is TaskStatus.FAILED
    await coord.reopen_task("once", by="operator")  # reopened: offered again
    await _no_unindexed(coord)

    await coord.create_task({"id": "gone", "title": "x", "priority": 50})
    current = await coord.tasks.get("gone")
    assert current is not None
    await coord.tasks.delete("gone", current.revision)  # deleted: its slot is dead to the hand-out
    got = await coord.next_task("a")
    assert got is not None and got.task_id == "once"
    assert await coord.next_task("a") is None


async def test_an_offer_whose_task_write_never_landed_is_voided_after_the_grace(bus: EventBus) -> None:
    clock = Clock(1_000_000.0)
    coord = IFCoordinator(bus, clock=clock)
    await coord.register_swarm("a")
    await coord.create_tasks([{"id": "dep", "title": "x"},
                              {"id": "stuck", "title": "x", "priority": 9, "dependencies": ["dep"]}])
    stuck = await coord.get_task("stuck")
    # the first write of a transition to available, by a writer that then dies
    await coord.ready.offer([stuck.model_copy(update={"ready_seq": stuck.ready_seq + 1})])
    got = await coord.next_task("a")
    assert got is not None and got.task_id == "dep"  # the in-flight offer is passed over, not claimed
    assert (await coord.get_task("stuck")).ready_seq == 0  # and, within the grace, left alone
    await coord.release_task("a", "dep", got.claim_id)

    clock.now += GRACE + 1
    got = await coord.next_task("a")
    assert got is not None and got.task_id == "dep"
    assert (await coord.get_task("stuck")).ready_seq == 1  # voided: the dead writer's transition cannot land
    lane, band = lane_of([]), band_of(stuck)
    slot = await coord.ready.slots.read(coord.ready.slot_id(lane, band, 0))
    queue = (await coord.ready.lanes.read(lane) or Lane()).bands[band]
    assert (slot is not None and slot.dead) or (slot is None and queue.head == 1), (slot, queue)
    await coord.complete_task("a", "dep", None, got.claim_id)  # now it becomes available for real
    got = await coord.next_task("a")
    assert got is not None and got.task_id == "stuck"
    await _no_unindexed(coord)


async def test_a_slot_allocated_but_never_written_is_closed_and_its_writer_retries(bus: EventBus) -> None:
    clock = Clock(1_000_000.0)
    coord = IFCoordinator(bus, clock=clock)
    await coord.register_swarm("a")
    await coord.create_task({"id": "first", "title": "x"})
    late = (await coord.get_task("first")).model_copy(update={"id": "late", "ready_seq": 1})
    placed = await coord.ready._allocate(lane_of([]), [late])  # the writer dies before its slot
    assert [p for _, _, p in placed] == [1]
    clock.now += GRACE + 1
    got = await coord.next_task("a")
    assert got is not None and got.task_id == "first"
    tomb = await coord.ready.slots.read(coord.ready.slot_id(lane_of([]), band_of(late), 1))
    assert tomb == Slot(at=clock.now, dead=True)
    # a writer that comes back finds its position closed and takes another
    await coord.ready.offer([late])
    slot = await coord.ready.slots.read(coord.ready.slot_id(lane_of([]), band_of(late), 2))
    assert slot is not None and slot.task_id == "late" and not slot.dead


async def test_a_process_behind_a_moved_head_writes_no_tombstone_where_slots_were_deleted(
        bus: EventBus) -> None:
    """A process whose copy of a lane is behind reads slots another process's
    head move has deleted: passed, not unwritten. It writes nothing there (a
    tombstone is never deleted; under load a thousand agents wrote them and
    timed out) and hands out the live task after them."""
    clock = Clock(1_000_000.0)
    other = IFCoordinator(bus, clock=clock)
    await other.register_swarm("a")
    await other.create_tasks([{"id": f"p{i}", "title": "x"} for i in range(4)])
    async with IFCoordinator(bus, clock=clock) as behind:
        follower = behind.ready.lanes._follower
        assert follower is not None
        follower.cancel()  # its copy of the lane stops here, head 0
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        for _ in range(3):  # another process hands out the first three; its head moves past them
            got = await other.next_task("a")
            assert got is not None
            await other.complete_task("a", got.task_id, None, got.claim_id)
        await other.close()  # lets the head move and the deletions finish
        lane, band = lane_of([]), band_of(await other.get_task("p0"))
        moved = await other.ready.lanes.get_exact(lane)
        assert moved is not None and moved.value.bands[band].head >= 2
        clock.now += GRACE + 1  # (a slot missing for longer than this looks never written)
        got = await behind.next_task("a")
        assert got is not None and got.task_id == "p3"
        for position in range(moved.value.bands[band].head):
            assert await behind.ready.slots.get(behind.ready.slot_id(lane, band, position)) is None


async def test_slots_claimed_elsewhere_do_not_pile_up_in_front_of_a_process(bus: EventBus) -> None:
    """A process passes over a slot whose task another process claimed; it
    reads it again a moment later (its winner marks it dead), so the head
    can move past it. Else slots claimed by other processes would pile up
    in front of this one's hand-outs until they found nothing at all."""
    clock = Clock(1_000_000.0)
    here = IFCoordinator(bus, clock=clock, lease_ttl=30)
    there = IFCoordinator(bus, clock=clock, lease_ttl=30)
    for swarm in ("a", "b"):
        await here.register_swarm(swarm)
    await here.create_tasks([{"id": f"t{i}", "title": "x"} for i in range(6)])
    for i in range(3):  # claimed directly (``ifctl task claim``): nobody marks their slots dead
        assert await there.claim_task("b", f"t{i}")
    first = await here.next_task("a")
    assert first is not None and first.task_id not in {"t0", "t1", "t2"}
    await here.ready.settle(5)
    lane = lane_of([])
    head = (await here.ready.lanes.get_exact(lane)).value.bands["c0"].head  # type: ignore[union-attr]
    assert head == 0  # the claimed ones lead it, passed over
    clock.now += 3  # (more than REREAD_AFTER; far less than their leases)
    second = await here.next_task("a")
    assert second is not None and second.task_id not in {"t0", "t1", "t2"}
    await here.ready.settle(5)
    moved = (await here.ready.lanes.get_exact(lane)).value.bands["c0"].head  # type: ignore[union-attr]
    assert moved >= 3, moved  # read again, found claimed a while ago, marked dead, passed


def _count_swaps(bus: EventBus, prefix: str) -> Counter[str]:
    """Count the compare-and-swaps the bus is asked for on keys under ``prefix``."""
    swaps: Counter[str] = Counter()
    update = bus.update

    async def counted(key: str, value: Any, revision: int) -> Any:
        if key.startswith(prefix):
            swaps[key] += 1
        return await update(key, value, revision)

    bus.update = counted  # type: ignore[method-assign]
    return swaps


async def test_hand_outs_of_one_process_pass_over_each_others_tasks(bus: EventBus) -> None:
    """An ``ifctl mcp`` server or a drain worker runs many agents on one
    coordinator: they take distinct tasks without a single claim lost to a
    neighbour, and without each of them reading the head of the queue."""
    n = 30
    coord = IFCoordinator(bus)
    for i in range(n):
        await coord.register_swarm(f"a{i:02d}")
    await coord.create_tasks([{"id": f"t{i:03d}", "title": "x"} for i in range(n)])
    counter = Reads(bus)
    swaps = _count_swaps(bus, "tasks/")
    got = await asyncio.gather(*(coord.next_task(f"a{i:02d}") for i in range(n)))
    assert all(g is not None and g.won for g in got)
    assert sorted(g.task_id for g in got if g is not None) == [f"t{i:03d}" for i in range(n)]
    assert sum(swaps.values()) == n, swaps  # one compare-and-swap per task: none lost
    slot_reads = [k for k in counter.keys if k.startswith(READY_SLOTS)]
    assert len(slot_reads) <= 2 * n, Counter(slot_reads).most_common(5)  # not n per slot
    assert counter.gets["tasks"] == n, counter.gets  # no task read by a second claimant


async def test_a_task_claimed_elsewhere_is_passed_over_until_its_lease_lapses(bus: EventBus) -> None:
    clock = Clock(1_000_000.0)
    here = IFCoordinator(bus, clock=clock, lease_ttl=30)
    there = IFCoordinator(bus, clock=clock, lease_ttl=30)  # another process on the same board
    for swarm in ("a", "b"):
        await here.register_swarm(swarm)
    await here.create_tasks([{"id": "t1", "title": "x", "priority": 9}, {"id": "t2", "title": "y"},
                             {"id": "t3", "title": "z"}])
    assert await there.claim_task("b", "t1")  # claimed directly: its slot is not marked dead
    counter = Reads(bus)
    first = await here.next_task("a")
    assert first is not None and first.task_id in {"t2", "t3"}
    assert counter.keys.count("tasks/t1") == 1  # tried once, seen claimed
    await here.release_task("a", first.task_id, first.claim_id)
    counter.reset()
    again = await here.next_task("a")
    assert again is not None and again.task_id in {"t2", "t3"}
    assert "tasks/t1" not in counter.keys  # known claimed until its lease lapses: not tried again
    await here.release_task("a", again.task_id, again.claim_id)
    clock.now += 31  # b's agent died: its claim lapsed
    lapsed = await here.next_task("a")
    assert lapsed is not None and lapsed.task_id == "t1"


async def test_heads_move_past_dead_slots_and_passed_slots_are_deleted(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("a")
    n = 3 * WINDOW
    await coord.create_tasks([{"id": f"t{i:03d}", "title": "x"} for i in range(n)])
    for _ in range(n):
        got = await coord.next_task("a")
        assert got is not None
        await coord.complete_task("a", got.task_id, None, got.claim_id)
    await coord.close()  # lets the background tidying finish
    assert await coord.next_task("a") is None
    await coord.close()
    lane = await coord.ready.lanes.read(lane_of([]))
    assert lane is not None
    queue = lane.bands[band_of(await coord.get_task("t000"))]
    assert queue.tail == n and queue.head >= n - WINDOW, queue
    left = await coord.ready.slots.list()
    assert len(left) <= n - queue.head, [v.key for v in left]


async def test_a_watcher_reindexes_tasks_made_available_before_the_index(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("a")
    await coord.create_task({"id": "old", "title": "x"})
    for v in await coord.ready.slots.list():  # as a board from before the index would be
        await coord.ready.slots.delete(coord.ready.slots.id_of(v.key))
    assert await coord.ready.whole.delete("")  # (nor would it say the index is whole)
    assert [t.id for t in await coord.ready.unindexed(await coord.list_tasks())] == ["old"]
    async with IFCoordinator(bus) as watcher:
        for _ in range(200):
            if not await watcher.ready.unindexed(await watcher.list_tasks()):
                break
            await asyncio.sleep(0.02)
        got = await watcher.next_task("a")
        assert got is not None and got.task_id == "old"


async def _until_whole(coord: IFCoordinator) -> None:
    for _ in range(500):  # (a guard against a hang, never a latency assertion)
        if await coord.ready.whole.read() is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first watcher never marked the index whole")


async def test_a_watcher_that_finds_the_index_whole_reads_no_slot_listing(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("a")
    await coord.create_tasks([{"id": f"t{i}", "title": "x"} for i in range(20)])
    async with IFCoordinator(bus) as first:
        await _until_whole(first)
    counter = Reads(bus)
    async with IFCoordinator(bus) as second:
        await second.ready.settle(5)
        await asyncio.sleep(0.1)  # what it spawned at start has run
        got = await second.next_task("a")
        assert got is not None
    assert not [p for p in counter.lists if p.startswith(READY_SLOTS)], counter.lists


async def test_moving_an_index_record_aside_makes_the_next_watcher_reindex(bus: EventBus) -> None:
    from infrafabric.doctor import examine, quarantine
    from infrafabric.witness import Witness

    coord = IFCoordinator(bus)
    await coord.register_swarm("a")
    await coord.create_task({"id": "t", "title": "x"})
    async with IFCoordinator(bus) as first:
        await _until_whole(first)
    [slot] = await coord.ready.slots.list()
    await bus.put(slot.key, b"{not a slot")  # unreadable: the doctor moves it aside
    findings, _ = await examine(bus)
    assert [f.key for f in findings] == [slot.key]
    assert await quarantine(bus, findings, witness=Witness(bus), by="ops") == findings
    assert await coord.ready.whole.read() is None  # the index may lack a task now
    async with IFCoordinator(bus) as watcher:
        await _until_whole(watcher)
        got = await watcher.next_task("a")
        assert got is not None and got.task_id == "t"  # offered again by the re-index


async def test_an_index_founded_on_an_empty_board_is_whole_and_one_on_older_tasks_is_not(
        bus: EventBus, bus_url: str) -> None:
    coord = IFCoordinator(bus)
    await coord.create_task({"id": "t", "title": "x"})
    assert await coord.ready.whole.read() is not None  # no watcher need check it
    async with connect(bus_url.replace("namespace=", "namespace=older")) as other:
        older = IFCoordinator(other)
        await older.register_swarm("a")
        await older.tasks.put("old", Task(id="old", title="from before the index"))  # as an old version wrote
        await older.create_task({"id": "new", "title": "x"})
        assert await older.ready.whole.read() is None
        async with IFCoordinator(other) as watcher:
            await _until_whole(watcher)  # after it re-indexed the older task
            got = [await watcher.next_task("a"), await watcher.next_task("a")]
        assert sorted(g.task_id for g in got if g is not None) == ["new", "old"]


async def test_without_any_watcher_a_lapsed_claim_is_still_handed_out(bus: EventBus) -> None:
    clock = Clock(1_000_000.0)
    coord = IFCoordinator(bus, clock=clock, lease_ttl=5)
    await coord.register_swarm("a")
    await coord.register_swarm("b")
    await coord.create_task({"id": "only", "title": "x"})
    got = await coord.next_task("a")
    assert got is not None
    assert await coord.next_task("b") is None
    clock.now += 6  # a's agent died; no long-lived coordinator is there to notice
    got = await coord.next_task("b")
    assert got is not None and got.task_id == "only"


# -- across processes ---------------------------------------------------------------


async def _run(cmds: list[list[str]]) -> list[str]:
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = await asyncio.gather(*(asyncio.to_thread(p.communicate, timeout=180) for p in procs))
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    return [line for out, _ in outs for line in out.splitlines()]


async def test_processes_draining_one_board_do_each_task_once(engine_url: str) -> None:
    async with connect(engine_url) as bus:
        coord = IFCoordinator(bus)
        for i in range(4):
            await coord.register_swarm(f"p{i}")
        n = 120
        await coord.create_tasks([{"id": f"t{i:03d}", "title": "x", "priority": i % 3} for i in range(n)])
        lines = await _run([[sys.executable, WORKER, engine_url, f"p{i}", "drain"] for i in range(4)])
        done = Counter(line.split()[1] for line in lines if line.startswith("done "))
        assert sorted(done) == [f"t{i:03d}" for i in range(n)]
        assert max(done.values()) == 1, [k for k, v in done.items() if v > 1]
        assert {t.status for t in await coord.list_tasks()} == {TaskStatus.COMPLETED}
        await _no_unindexed(coord)


async def test_a_writer_killed_between_its_two_writes_loses_nothing(engine_url: str) -> None:
    clock = Clock(1_000_000.0)
    async with connect(engine_url) as bus:
        coord = IFCoordinator(bus, clock=clock)
        await coord.register_swarm("a")
        await coord.create_tasks([{"id": "dep", "title": "x"},
                                  {"id": "T-crash", "title": "x", "priority": 3, "dependencies": ["dep"]}])
        doomed = subprocess.Popen([sys.executable, WORKER, engine_url, "doomed", "offer"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert doomed.stdout is not None
            assert await asyncio.to_thread(doomed.stdout.readline) == "offered\n"
        finally:
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
        clock.now = max(clock.now, time.time()) + GRACE + 1
        got = await coord.next_task("a")
        assert got is not None and got.task_id == "dep"
        await coord.complete_task("a", "dep", None, got.claim_id)
        got = await coord.next_task("a")
        assert got is not None and got.task_id == "T-crash"
        await _no_unindexed(coord)


# -- model ---------------------------------------------------------------------------

SWARMS = {"py": ["code:python"], "ops": ["ops:k8s"], "both": ["code:python", "ops:k8s"]}
CAPS = [[], ["code:python"], ["ops:k8s"], ["code:python", "ops:k8s"]]
TTL = 10.0


class IndexMachine(RuleBasedStateMachine):
    """Random transitions on a memory bus with a fake clock and no watcher."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock(1_000_000.0)
        self.bus = from_url(f"memory://ready?namespace=r{uuid.uuid4().hex[:10]}")
        self.run(self.bus.connect())
        self.coord = IFCoordinator(self.bus, lease_ttl=TTL, clock=self.clock, min_coverage=1.0,
                                   max_attempts=2)
        self.held: dict[str, tuple[str, str]] = {}  # task -> (swarm, claim id)
        self.n = 0

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.bus.close())
        self.loop.close()

    @initialize()
    def swarms(self) -> None:
        for swarm, caps in SWARMS.items():
            self.run(self.coord.register_swarm(swarm, caps))

    def board(self) -> list[Any]:
        tasks: list[Any] = self.run(self.coord.list_tasks())
        return tasks

    @rule(data=st.data(), count=st.integers(1, 3))
    def create(self, data: st.DataObject, count: int) -> None:
        ids = [t.id for t in self.board()]
        specs = []
        for _ in range(count):
            deps = data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=2)) if ids else []
            specs.append({"id": f"t{self.n}", "title": "x", "dependencies": deps,
                          "capabilities": data.draw(st.sampled_from(CAPS)),
                          "priority": data.draw(st.integers(0, 2)),
                          "kind": data.draw(st.sampled_from(["critical", "filler"]))})
            self.n += 1
        if data.draw(st.booleans()):
            self.run(self.coord.create_tasks(specs))
        else:
            for spec in specs:
                self.run(self.coord.create_task(spec))

    @rule(swarm=st.sampled_from(sorted(SWARMS)))
    def hand_out(self, swarm: str) -> None:
        now = self.clock.now
        states = {t.id: t.status for t in self.board()}
        can = [t for t in self.board() if set(t.capabilities) <= set(SWARMS[swarm]) and (
            t.status is TaskStatus.AVAILABLE
            or (t.status is TaskStatus.CLAIMED and (t.lease_until or 0) <= now)
            or (t.status is TaskStatus.BLOCKED
                and all(states[d] is TaskStatus.COMPLETED for d in t.dependencies)))]
        got = self.run(self.coord.next_task(swarm))
        assert (got is not None) == bool(can), (swarm, [t.id for t in can])
        if got is not None:
            assert got.task_id in {t.id for t in can}
            best = min((0 if t.kind.value == "critical" else 1, -t.priority) for t in can
                       if t.status is TaskStatus.AVAILABLE) if any(
                t.status is TaskStatus.AVAILABLE for t in can) else None
            if best is not None and got.task is not None:
                assert (0 if got.task.kind.value == "critical" else 1, -got.task.priority) == best
            self.held[got.task_id] = (swarm, got.claim_id or "")

    def _pick(self, data: st.DataObject) -> tuple[str, str, str]:
        task_id = data.draw(st.sampled_from(sorted(self.held)))
        swarm, claim = self.held.pop(task_id)
        return task_id, swarm, claim

    @precondition(lambda self: self.held)
    @rule(data=st.data(), how=st.sampled_from(["complete", "release", "fail"]))
    def finish(self, data: st.DataObject, how: str) -> None:
        task_id, swarm, claim = self._pick(data)
        step: Callable[..., Awaitable[Any]] = {"complete": self.coord.complete_task,
                                                "release": self.coord.release_task,
                                                "fail": self.coord.fail_task}[how]
        with contextlib.suppress(NotOwnerError):  # a lapsed claim taken over meanwhile
            self.run(step(swarm, task_id, "r", claim) if how != "release" else step(swarm, task_id, claim))

    @rule(seconds=st.sampled_from([1.0, TTL + 1]))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def lapse(self, data: st.DataObject) -> None:
        task_id, _, _ = self._pick(data)
        self.clock.now += TTL + 1
        self.run(self.coord.expire_lease(task_id))

    @rule(data=st.data())
    def reopen(self, data: st.DataObject) -> None:
        failed = [t.id for t in self.board() if t.status is TaskStatus.FAILED]
        if failed:
            self.run(self.coord.reopen_task(data.draw(st.sampled_from(failed)), by="op"))

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        board = [t for t in self.board() if t.status is TaskStatus.AVAILABLE]
        if board:
            task = data.draw(st.sampled_from(board))
            if not [t for t in self.board() if task.id in t.dependencies]:
                self.run(self.coord.tasks.delete(task.id))

    @invariant()
    def every_available_task_is_indexed(self) -> None:
        board = self.board()
        assert self.run(self.coord.ready.unindexed(board)) == []


IndexMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestIndexModel = IndexMachine.TestCase
