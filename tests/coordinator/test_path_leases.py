"""[4/9] Path leases are taken with the claim: both or neither.

On every backend: overlapping paths are never held by two claims, disjoint
ones are; leases lapse with the claim and end with it; ``next_task`` skips
what another claim's paths cover and ``--why`` names the holder; a claimant
that dies between the path lease and the claim leaves neither (its entry is
voided by the next claimant), and one voided in flight cannot land. Across
processes on NATS and etcd: agents racing on overlapping tasks never hold
overlapping paths at once, and a claimant killed (SIGKILL) between the two
writes leaves nothing held.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infrafabric.bus import EventBus, connect
from infrafabric.bus.layout import WORKSPACE_LEASES
from infrafabric.coordinator import IFCoordinator, TaskStatus
from infrafabric.coordinator.leases import Conflict, PathLeases
from infrafabric.coordinator.paths import overlap
from infrafabric.doctor import examine
from infrafabric.errors import BusTimeoutError, CorruptRecordError, NotOwnerError
from support import Clock

WORKER = str(Path(__file__).with_name("lease_worker.py"))

BOARD = [
    {"id": "api", "title": "rework the API", "paths": ["src/api/**"]},
    {"id": "app", "title": "fix app.py", "paths": ["src/api/app.py"]},
    {"id": "docs", "title": "write docs", "paths": ["docs/*.md"]},
    {"id": "free", "title": "no paths"},
]


async def board(bus: EventBus, clock: Clock | None = None, specs: list[dict[str, Any]] | None = None
                ) -> IFCoordinator:
    coord = IFCoordinator(bus, clock=clock or Clock(1_000_000.0))
    for swarm in ("a", "b", "c"):
        await coord.register_swarm(swarm)
    await coord.create_tasks(specs or BOARD)
    return coord


async def table(coord: IFCoordinator) -> dict[str, str]:
    got = await coord.leases.table.read()
    return {} if got is None else {k: v.swarm_id for k, v in got.leases.items()}


async def test_overlapping_paths_are_never_held_twice_and_disjoint_ones_are(bus: EventBus) -> None:
    coord = await board(bus)
    assert (await coord.try_claim("a", "api")).won
    refused = await coord.try_claim("b", "app")
    assert not refused.won
    assert "src/api/app.py" in refused.reason and "held by a for task api" in refused.reason, refused.reason
    assert (await coord.get_task("app")).status is TaskStatus.AVAILABLE  # nothing written for b
    assert (await coord.try_claim("b", "docs")).won  # disjoint: both held at once
    assert await table(coord) == {"api": "a", "docs": "b"}
    held = {lease.task_id for lease, _ in await coord.leases.held()}
    assert held == {"api", "docs"}
    await coord.complete_task("a", "api", "done")
    assert await table(coord) == {"docs": "b"}  # ended with its claim, and tidied away
    assert (await coord.try_claim("c", "app")).won


async def test_next_task_skips_what_another_claim_covers_and_why_names_it(bus: EventBus) -> None:
    coord = await board(bus)
    assert (await coord.try_claim("a", "api")).won
    got = [(await coord.next_task("b")), (await coord.next_task("b"))]
    assert sorted(o.task_id for o in got if o is not None) == ["docs", "free"]
    assert await coord.next_task("b") is None
    why = await coord.explain_empty("b")
    line = next(d for d in why.details if d.startswith("app:"))
    assert "held by a for task api" in line and "src/api/app.py" in line, why.details


async def test_a_release_or_failure_frees_the_paths_and_pushes_what_waited(bus: EventBus) -> None:
    coord = await board(bus)
    first = await coord.try_claim("a", "api")
    async with coord.pushed_tasks("b") as pushes:
        await coord.release_task("a", "api", first.claim_id)
        pushed = {(await pushes.get(5)).id, (await pushes.get(5)).id}
    assert pushed == {"api", "app"}  # app waited on api's paths: told it is free now
    assert await table(coord) == {}
    second = await coord.try_claim("b", "app")
    assert second.won
    await coord.fail_task("b", "app", "broke", second.claim_id)
    assert await table(coord) == {}
    assert (await coord.try_claim("a", "api")).won


async def test_path_leases_lapse_with_the_claim_and_a_late_heartbeat_cannot_revive_them(
        bus: EventBus) -> None:
    clock = Clock(1_000_000.0)
    coord = await board(bus, clock)
    held = await coord.try_claim("a", "api", lease_ttl=10)
    clock.now += 11  # a's lease lapsed: its paths with it
    taken = await coord.try_claim("b", "app")
    assert taken.won, taken.reason
    with pytest.raises(NotOwnerError):  # ended when b took the paths: renewing would make two holders
        await coord.heartbeat("a", "api", held.claim_id)
    again = await coord.try_claim("a", "api")
    assert not again.won and "held by b for task app" in again.reason


async def test_same_branch_is_one_claims_at_a_time(bus: EventBus) -> None:
    coord = await board(bus, specs=[{"id": "x", "title": "x", "branch": "feat/shared"},
                                    {"id": "y", "title": "y", "branch": "feat/shared"},
                                    {"id": "z", "title": "z", "branch": "feat/other"}])
    assert (await coord.try_claim("a", "x")).won
    refused = await coord.try_claim("b", "y")
    assert not refused.won and refused.reason.startswith("branch feat/shared is held by a for task x")
    assert (await coord.try_claim("b", "z")).won


async def test_a_claimant_dead_between_the_lease_and_the_claim_leaves_neither(bus: EventBus) -> None:
    coord = await board(bus)
    api = await coord.get_task("api")
    # step one of a claim whose claimant died before step two
    dead = await coord.leases.take(api, "a", "deadbeefdeadbeef")
    assert not isinstance(dead, Conflict) and await table(coord) == {"api": "a"}
    assert (await coord.get_task("api")).status is TaskStatus.AVAILABLE  # no claim
    assert await coord.leases.held() == []  # and its entry holds nothing
    taken = await coord.try_claim("b", "app")  # overlaps it: voids it at once, no waiting
    assert taken.won, taken.reason
    assert await table(coord) == {"app": "b"}
    assert (await coord.get_task("api")).claim_seq == api.claim_seq + 1  # voided: that claim can never land


async def test_the_task_itself_is_reclaimable_after_its_claimant_died_mid_claim(bus: EventBus) -> None:
    coord = await board(bus)
    await coord.leases.take(await coord.get_task("api"), "a", "deadbeefdeadbeef")
    taken = await coord.try_claim("b", "api")
    assert taken.won, taken.reason
    assert await table(coord) == {"api": "b"}
    assert [lease.claim_id for lease, _ in await coord.leases.held()] == [taken.claim_id]


async def test_a_claim_voided_in_flight_cannot_land(bus: EventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """a writes its path lease; before its claim lands, b claims an overlapping
    task and voids a's entry: a's claim is refused, b holds, the table has b's."""
    coord = await board(bus)
    rival = IFCoordinator(bus, clock=coord.clock)
    take = coord.leases.take
    rival_outcome: list[Any] = []

    async def take_then_rival(*args: Any, **kwargs: Any) -> Any:
        lease = await take(*args, **kwargs)
        rival_outcome.append(await rival.try_claim("b", "app"))
        return lease

    monkeypatch.setattr(coord.leases, "take", take_then_rival)
    mine = await coord.try_claim("a", "api")
    assert rival_outcome and rival_outcome[0].won, rival_outcome
    assert not mine.won and mine.lost and "voided" in mine.reason, mine.reason
    assert (await coord.get_task("api")).status is TaskStatus.AVAILABLE
    assert await table(coord) == {"app": "b"}


async def held_now(coord: IFCoordinator) -> list[str]:
    """Tasks claimed with an unlapsed lease, read straight from the board."""
    now = coord.clock()
    return sorted(t.id for t in await coord.list_tasks()
                  if t.status is TaskStatus.CLAIMED and t.lease_until is not None and now < t.lease_until)


async def test_a_renewal_in_flight_cannot_revive_a_claim_whose_paths_passed_on(
        bus: EventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Found in review.) a's heartbeat is decided just before its lease lapses;
    before it lands, b takes overlapping paths. The lapsed claim is ended on its
    task as b takes them, so the renewal loses its swap and a is told."""
    clock = Clock(1_000_000.0)
    coord = await board(bus, clock)
    rival = IFCoordinator(bus, clock=clock)
    won = await coord.try_claim("a", "api", lease_ttl=10)
    clock.now += 9.99
    update, rivals, fired = bus.update, [], []

    async def late_update(key: str, value: bytes, revision: int) -> int | None:
        if key.endswith("tasks/api") and not fired:  # a's renewal: hold it back a moment
            fired.append(True)
            clock.now += 0.02  # the lease lapses while the renewal is on its way
            rivals.append(await rival.try_claim("b", "app"))
        return await update(key, value, revision)

    monkeypatch.setattr(bus, "update", late_update)
    with pytest.raises(NotOwnerError):
        await coord.heartbeat("a", "api", won.claim_id)
    assert rivals[0].won, rivals[0].reason
    assert await held_now(coord) == ["app"]
    api = await coord.get_task("api")
    assert api.status is TaskStatus.AVAILABLE and api.attempts == 1  # ended as a lapse: counted, pushed


async def test_a_claim_whose_outcome_is_unknown_keeps_its_path_lease(
        bus: EventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Found in review.) The claim's write lands but its answer is lost and the
    read-back fails: the claim may hold, so its path lease must stay."""
    coord = await board(bus)
    update, get = bus.update, bus.get
    broken: list[bool] = []

    async def lost_answer(key: str, value: bytes, revision: int) -> int | None:
        rev = await update(key, value, revision)
        if key.endswith("tasks/api") and not broken:
            broken.append(True)
            raise BusTimeoutError("update: deadline missed")
        return rev

    async def failing_get(key: str) -> Any:
        if broken and key.endswith("tasks/api"):
            raise BusTimeoutError("get: deadline missed")
        return await get(key)

    monkeypatch.setattr(bus, "update", lost_answer)
    monkeypatch.setattr(bus, "get", failing_get)
    with pytest.raises(BusTimeoutError):
        await coord.try_claim("a", "api")
    monkeypatch.setattr(bus, "get", get)
    monkeypatch.setattr(bus, "update", update)
    assert (await coord.get_task("api")).owner == "a"  # it landed
    refused = await coord.try_claim("b", "app")
    assert not refused.won and "held by a for task api" in refused.reason
    assert await held_now(coord) == ["api"]


async def test_a_claimant_refused_anyway_voids_nobody(bus: EventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Found in review.) c's paths clash with a's claim in flight and with b's
    held one: c is refused without voiding a's, which then lands."""
    coord = await board(bus, specs=[{"id": "w", "title": "w", "paths": ["y/**"]},
                                    {"id": "h", "title": "h", "paths": ["x/**"]},
                                    {"id": "v", "title": "v", "paths": ["x/a.py", "y/a.py"]}])
    rival = IFCoordinator(bus, clock=coord.clock)
    take = coord.leases.take
    seen: list[Any] = []

    async def take_then_rivals(*args: Any, **kwargs: Any) -> Any:
        got = await take(*args, **kwargs)
        seen.append(await rival.try_claim("b", "h"))
        seen.append(await rival.try_claim("c", "v"))
        return got

    monkeypatch.setattr(coord.leases, "take", take_then_rivals)
    mine = await coord.try_claim("a", "w")
    assert seen[0].won and not seen[1].won and "held by b for task h" in seen[1].reason
    assert mine.won, mine.reason
    assert await held_now(coord) == ["h", "w"]


async def test_entries_that_hold_nothing_are_swept_before_the_table_is_full(bus: EventBus) -> None:
    long = "x" * 400
    specs = [{"id": f"big{i}", "title": "big", "paths": [f"t{i}/{j}/{long}" for j in range(100)]}
             for i in range(8)]
    coord = await board(bus, specs=specs)
    for i in range(6):  # claimants that died between the two writes, on paths nobody else wants
        await coord.leases.take(await coord.get_task(f"big{i}"), "a", f"dead{i:012d}")
    assert len((await coord.leases.table.read()).leases) == 6  # type: ignore[union-attr]
    taken = await coord.try_claim("b", "big7")
    assert taken.won, taken.reason
    assert list((await coord.leases.table.read()).leases) == ["big7"]  # type: ignore[union-attr]


async def test_concurrent_claims_of_overlapping_tasks_one_wins(bus: EventBus) -> None:
    specs = [{"id": f"t{i}", "title": f"t{i}", "paths": [f"src/{i}/**", "src/shared.py"]} for i in range(8)]
    coord = await board(bus, specs=specs)
    swarms = [f"s{i}" for i in range(8)]
    for s in swarms:
        await coord.register_swarm(s)
    outcomes = await asyncio.gather(*(coord.try_claim(s, f"t{i}") for i, s in enumerate(swarms)))
    assert sum(o.won for o in outcomes) == 1, [o.reason for o in outcomes]
    assert len(await coord.leases.held()) == 1


async def test_a_full_lease_table_refuses_the_claim_and_a_corrupt_one_is_never_replaced(
        bus: EventBus) -> None:
    long = "x" * 400
    specs = [{"id": f"big{i}", "title": "big", "paths": [f"t{i}/{j}/{long}" for j in range(100)]}
             for i in range(8)]
    coord = await board(bus, specs=specs)
    outcomes = [await coord.try_claim("a", f"big{i}") for i in range(8)]
    won = [o for o in outcomes if o.won]
    assert 0 < len(won) < 8
    full = outcomes[len(won)]
    assert not full.won and "the path-lease table is full" in full.reason
    assert (await coord.get_task(full.task_id)).status is TaskStatus.AVAILABLE  # nothing written
    await bus.put(WORKSPACE_LEASES, b"{not json")
    with pytest.raises(CorruptRecordError, match="workspace/leases"):
        await coord.try_claim("b", "big7")
    assert (await bus.get(WORKSPACE_LEASES)).value == b"{not json"  # kept for `ifctl doctor`, not overwritten
    findings, _ = await examine(bus)
    assert [f.key for f in findings] == [WORKSPACE_LEASES]


def test_overlap_examples_used_by_the_leases() -> None:
    assert overlap("src/api/**", "src/api/app.py") == "src/api/app.py"
    assert overlap("docs/*.md", "src/api/**") is None
    assert PathLeases.clash(["a/**"], None, _lease(["b/**"], "feat/x")) is None
    assert PathLeases.clash([], "feat/x", _lease([], "feat/x")) == ("feat/x", "feat/x", "feat/x")


def _lease(paths: list[str], branch: str | None) -> Any:
    from infrafabric.coordinator.models import PathLease
    return PathLease(task_id="t", swarm_id="s", claim_id="c", seq=0, paths=paths, branch=branch, taken_at=0)


# -- across processes, on the real engines -------------------------------------------------------------

async def test_agents_in_processes_never_hold_overlapping_paths_at_once(engine_url: str) -> None:
    # ten tasks over three files: many overlap, some are disjoint
    files = ["src/a.py", "src/b.py", "lib/c.py"]
    specs = [{"id": f"w{i}", "title": f"w{i}", "paths": [files[i % 3], files[(i * 7 + 1) % 3]] if i % 4
              else [files[i % 3]]} for i in range(10)]
    async with connect(engine_url) as bus:
        coord = IFCoordinator(bus)
        for i in range(4):
            await coord.register_swarm(f"p{i}")
        await coord.create_tasks(specs)
        procs = [subprocess.Popen([sys.executable, WORKER, engine_url, f"p{i}", "work"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(4)]
        outs = [await asyncio.to_thread(p.communicate, timeout=180) for p in procs]
        assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
        tasks = {t.id: t for t in await coord.list_tasks()}
        assert {t.status for t in tasks.values()} == {TaskStatus.COMPLETED}, outs
        # each task's claimed..completed interval (the same machine's clock in every process)
        spans = {}
        for t in tasks.values():
            claimed = [h.at for h in t.history if h.to is TaskStatus.CLAIMED]
            done = [h.at for h in t.history if h.to is TaskStatus.COMPLETED]
            spans[t.id] = (claimed[-1], done[-1])
        for x in tasks.values():
            for y in tasks.values():
                if x.id < y.id and PathLeases.tasks_clash(x, y):
                    (a0, a1), (b0, b1) = spans[x.id], spans[y.id]
                    assert a1 <= b0 or b1 <= a0, f"{x.id} {x.paths} and {y.id} {y.paths} were held at once"
        assert await coord.leases.table.read() is None or not (await coord.leases.table.read()).leases


async def test_a_claimant_killed_between_lease_and_claim_leaves_neither(engine_url: str) -> None:
    async with connect(engine_url) as bus:
        coord = IFCoordinator(bus)
        await coord.register_swarm("doomed")
        await coord.register_swarm("next")
        await coord.create_tasks(BOARD)
        doomed = subprocess.Popen([sys.executable, WORKER, engine_url, "doomed", "die-between", "api"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = await asyncio.to_thread(doomed.communicate, timeout=60)
        assert doomed.returncode == -signal.SIGKILL, (out, err[-2000:])
        assert "lease written" in out
        assert await table(coord) == {"api": "doomed"}  # its step one landed ...
        assert (await coord.get_task("api")).status is TaskStatus.AVAILABLE  # ... its claim did not
        assert await coord.leases.held() == []  # so nothing is held
        taken = await coord.try_claim("next", "app")  # overlapping: free at once
        assert taken.won, taken.reason
        assert (await coord.try_claim("next", "api")).reason.startswith("its path src/api/** overlaps")

