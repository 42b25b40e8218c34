"""The long-lived coordinator's copy of the board (coordinator.copy): what
it answers, and that a large board does not load the garbage collector."""

from __future__ import annotations

import gc

from infrafabric.bus import EventBus
from infrafabric.coordinator import IFCoordinator, Task, TaskStatus
from infrafabric.coordinator.copy import BoardCopy


def _kept(copy: BoardCopy, task: Task, revision: int) -> None:
    copy.put(task, task.model_dump_json().encode(), revision)


def test_the_copy_answers_from_bytes_and_indexes_what_scans_need() -> None:
    copy = BoardCopy()
    plain = Task(id="T1", title="x", status=TaskStatus.AVAILABLE)
    leased = Task(id="T2", title="y", status=TaskStatus.AVAILABLE, paths=["src/**"])
    held = Task(id="T3", title="z", status=TaskStatus.CLAIMED, owner="a", claim_id="c1")
    for rev, task in enumerate((plain, leased, held), start=1):
        _kept(copy, task, rev)
    assert copy["T1"] == plain and copy.get("T9") is None and len(copy) == 3 and "T2" in copy
    assert copy.revision("T2") == 2 and copy.status("T3") is TaskStatus.CLAIMED
    assert copy.claimed() == {"T3": held} and [t.id for t in copy.claimed_by("a")] == ["T3"]
    assert [t.id for t in copy.leased_available()] == ["T2"]

    before = copy.put(leased.model_copy(update={"status": TaskStatus.CLAIMED, "owner": "b"}),
                      b"{}", 7)  # (the bytes are whatever the record held; only the task is decided on)
    assert before is not None and before.status == "available" and before.revision == 2
    assert copy.leased_available() == [] and set(copy.claimed()) == {"T2", "T3"}

    _kept(copy, Task(id="T4", title="w", status=TaskStatus.COMPLETED, owner="a"), 8)
    assert [t.id for t in copy.claimed_by("a")] == ["T3"]  # (one it completed is never read back)

    copy.unsure("T1")  # a later write did not decode: keep the copy, but never swap on it
    assert copy.revision("T1") is None and copy["T1"] == plain
    copy.remove("T3")
    assert "T3" not in copy and set(copy.claimed()) == {"T2"} and copy.claimed_by("a") == []


def test_a_large_copy_adds_no_objects_for_the_garbage_collector_to_walk() -> None:
    """A full collection walks every tracked object: 100,000 decoded tasks
    made it pause for over a second. The copy's rows are untracked."""
    copy = BoardCopy()
    for i in range(2000):
        _kept(copy, Task(id=f"T{i}", title="x", status=TaskStatus.AVAILABLE, dependencies=["T0"]), i + 1)
    gc.collect()
    assert not any(gc.is_tracked(row) for row in copy._rows.values())
    assert not gc.is_tracked(copy._rows)


async def test_a_watching_coordinator_reads_its_copy_like_the_board(bus: EventBus) -> None:
    """held_by, unblocked_by, the lease check and a swap on the copy, with the
    copy built from the board at start and kept from the watch."""
    other = IFCoordinator(bus)
    await other.register_swarm("a")
    await other.create_tasks([{"id": "A", "title": "a"}, {"id": "B", "title": "b", "dependencies": ["A"]},
                              {"id": "P", "title": "p", "paths": ["src/**"]}])
    assert await other.claim_task("a", "A")
    async with IFCoordinator(bus) as lived:
        board = lived.live_board()
        assert board is not None and set(board) == {"A", "B", "P"} and set(board.claimed()) == {"A"}
        assert board.status("B") is TaskStatus.BLOCKED and lived._claimable_copy("A") is None
        assert lived._claimable_copy("P") is None  # a path-leased claim always reads first
        assert await lived.claim_task("a", "P")  # (read first, then swapped on the task as read)
        assert [t.id for t in await lived.held_by("a")] in (["A"], ["A", "P"])  # (P: once the copy has it)
        await other.complete_task("a", "A", {})
        assert [t.id for t in await lived.unblocked_by("A")] == ["B"]
        won = await lived.try_claim("a", "B")
        assert won.won and (await other.get_task("B")).owner == "a"
