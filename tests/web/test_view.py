"""The dashboard's live view on memory, NATS and etcd (real servers)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from infrafabric.bus import EventBus
from infrafabric.coordinator import IFCoordinator
from infrafabric.coordinator.models import Task, TaskKind, TaskStatus
from infrafabric.governor import BreakerState, IFGovernor, SwarmProfile
from infrafabric.web import FleetView, critical_path
from infrafabric.witness import Witness
from support import Clock, until


def _task(tid: str, deps: tuple[str, ...] | list[str] = (), *, status: TaskStatus = TaskStatus.AVAILABLE,
          kind: TaskKind = TaskKind.CRITICAL, hours: str | None = None) -> Task:
    return Task(id=tid, title=tid, dependencies=list(deps), status=status, kind=kind,
                estimate_hours=None if hours is None else Decimal(hours))


def test_critical_path_is_the_longest_unfinished_chain() -> None:
    tasks = [_task("a"), _task("b", ["a"], hours="5"), _task("c", ["a"]), _task("d", ["b", "c"]),
             _task("f", kind=TaskKind.FILLER, hours="100")]
    assert critical_path(tasks) == ["a", "b", "d"]
    done = [_task("a", status=TaskStatus.COMPLETED), *tasks[1:]]
    assert critical_path(done) == ["b", "d"]
    # a dependency cycle (the board refuses them, but the bus could hold one) does not hang it
    cycle = [_task("x", ["y"]), _task("y", ["x"])]
    assert sorted(critical_path(cycle)) in (["x"], ["x", "y"], ["y"])
    assert critical_path([_task("only", status=TaskStatus.COMPLETED)]) == []


async def test_view_loads_what_the_bus_holds(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    gov = IFGovernor(bus)
    await coord.create_tasks([{"id": "t1", "title": "first", "capabilities": ["python"]},
                              {"id": "t2", "title": "second", "dependencies": ["t1"]},
                              {"id": "fill", "title": "filler", "kind": "filler"}])
    await gov.register_swarm(SwarmProfile(id="alpha", capabilities=["python"], reputation=Decimal("0.9")))
    await gov.set_budget("alpha", 5_000_000)
    await gov.track_cost("alpha", "tokens", 1_250_000, task_id="t1")
    await gov.register_swarm(SwarmProfile(id="beta", capabilities=["python"]))
    await gov.trip("beta", "3 consecutive failures", by="test")
    assert await coord.claim_task("alpha", "t1")

    view = FleetView(bus)
    await view.start()
    try:
        snap = view.snapshot()
        assert {t: v["status"] for t, v in snap["tasks"].items()} == {
            "t1": "claimed", "t2": "blocked", "fill": "available"}
        assert snap["tasks"]["t1"]["owner"] == "alpha" and snap["tasks"]["t1"]["lease_until"] is not None
        assert snap["critical_path"] == ["t1", "t2"]
        alpha = snap["swarms"]["alpha"]
        assert alpha["budget"] == {"limit_micros": 5_000_000, "spent_micros": 1_250_000, "reserved_micros": 0}
        assert alpha["spend"][-1][1] == 1_250_000 and alpha["holding"] == ["t1"]
        assert alpha["reputation"] == 0.9 and alpha["capabilities"] == ["python"]
        assert snap["swarms"]["beta"]["breaker"]["state"] == "open"
        assert alpha["live"]["live"] and alpha["live"]["because"] == ["holds t1"]
        assert not snap["swarms"]["beta"]["live"]["live"]
        assert [(w["kind"], w.get("swarm")) for w in snap["waiting"]] == [("breaker", "beta")]
        assert view.counts.claims_won == {"alpha": 1}
        assert snap["witness"]["length"] == 0
    finally:
        await view.close()


async def test_view_follows_changes_as_they_happen(bus: EventBus) -> None:
    clock = Clock()
    audit = Witness(bus)
    coord = IFCoordinator(bus, clock=clock, lease_ttl=10, observers=[audit.observer("IF.coordinator")])
    await coord.register_swarm("alpha", ["python"])
    await coord.register_swarm("beta", ["python"])
    view = FleetView(bus, clock=clock)
    await view.start()
    seen: list[tuple[str, Any]] = []
    view.listen(lambda e, d: seen.append((e, d)))
    try:
        await coord.create_task({"id": "t1", "title": "first"})
        await until(view, "t1 available", lambda: "t1" in view.tasks)
        assert await coord.claim_task("alpha", "t1")
        await until(view, "t1 claimed", lambda: view.tasks["t1"].status is TaskStatus.CLAIMED)
        task_events = [d for e, d in seen if e == "task" and d["id"] == "t1"]
        assert task_events[-1]["value"]["owner"] == "alpha"
        assert any(d["text"] == "t1 available → claimed by alpha" for e, d in seen if e == "event")

        clock.now += 11  # alpha's lease lapses; beta takes over and completes
        assert await coord.expire_lease("t1") is not None
        await until(view, "the lapse", lambda: view.counts.lease_lapses == {"alpha": 1})
        assert await coord.claim_task("beta", "t1")
        await coord.complete_task("beta", "t1", {"ok": True})
        await until(view, "t1 completed", lambda: view.tasks["t1"].status is TaskStatus.COMPLETED)
        assert view.counts.claims_won == {"alpha": 1, "beta": 1}
        assert view.counts.last_claim_at == clock()

        await audit.append("IF.chassis", "task_trapped", {"swarm_id": "beta", "limit": "trap"})
        await audit.append("IF.chassis", "task_limit_exceeded", {"swarm_id": "beta", "limit": "fuel"})
        await until(view, "the witness entries", lambda: view.counts.traps[("beta", "fuel")] == 1)
        assert view.counts.traps[("beta", "trap")] == 1
        length = view.witness_length
        assert length >= 6 and view.tail[-1].operation == "task_limit_exceeded"
        assert [e for e, _ in seen if e == "witness"]

        await coord.detect_blocker("beta", {"task_id": "t1", "reason": "needs a SIP expert"})
        await until(view, "the blocker", lambda: any(w["kind"] == "blocker" for w in view.waiting()))
        blocker = next(w for w in view.waiting() if w["kind"] == "blocker")
        assert blocker["swarm"] == "beta" and blocker["task"] == "t1" and "SIP" in blocker["reason"]

        result = await view.verify()
        assert result["ok"] is True and result["entries"] >= length and result["running"] is False
        assert view.verify_result == result
    finally:
        await view.close()


async def test_view_tells_live_swarms_from_dead_ones_and_shows_unattended_work(bus: EventBus) -> None:
    clock = Clock()
    coord = IFCoordinator(bus, clock=clock)
    await coord.register_swarm("alpha", ["python"])
    await coord.register_swarm("beta", ["rust"])
    await coord.create_task({"id": "py", "title": "p", "capabilities": ["python"]})
    view = FleetView(bus, clock=clock)
    await view.start()
    try:
        assert view.unattended == ["py"] and not view.snapshot()["swarms"]["alpha"]["live"]["live"]
        assert view.waiting()[0]["kind"] == "unattended" and view.waiting()[0]["tasks"] == ["py"]
        async with coord.present("alpha", via="mcp"):
            await until(view, "alpha live", lambda: view.live["alpha"].live)
            assert view.unattended == [] and all(w["kind"] != "unattended" for w in view.waiting())
            assert view.swarm_json("alpha")["live"]["because"][0].startswith("connected via mcp")  # type: ignore[index]
            await coord.create_task({"id": "rs", "title": "r", "capabilities": ["rust"]})
            await until(view, "rs unattended", lambda: view.unattended == ["rs"])  # beta is dead
            clock.now += 3600  # alpha's process stopped refreshing its mark: nobody deletes it
            await until(view, "alpha dead", lambda: not view.live["alpha"].live)
            assert view.unattended == ["py", "rs"]
    finally:
        await view.close()


async def test_breaker_reset_from_the_view_is_witnessed_and_seen(bus: EventBus) -> None:
    gov = IFGovernor(bus)
    await gov.register_swarm(SwarmProfile(id="gamma", capabilities=["python"]))
    await gov.set_budget("gamma", 1_000_000)
    await gov.trip("gamma", "budget exhausted", by="test")
    view = FleetView(bus)
    await view.start()
    try:
        assert view.swarms["gamma"].breaker is not None
        breaker = await view.reset_breaker("gamma", by="alice (web)", budget_micros=2_000_000)
        assert breaker.state is BreakerState.CLOSED and breaker.changed_by == "alice (web)"
        await until(view, "the closed breaker", lambda: not view.waiting())
        budget = view.swarms["gamma"].budget
        assert budget is not None and (budget.limit_micros, budget.spent_micros) == (2_000_000, 0)
        entries = [e async for e in Witness(bus).entries()]
        reset = [e for e in entries if e.operation == "circuit_breaker_reset"]
        assert len(reset) == 1 and reset[0].params["by"] == "alice (web)"
        assert any(item["kind"] == "breaker" and "closed" in item["text"] for item in view.events)
    finally:
        await view.close()
