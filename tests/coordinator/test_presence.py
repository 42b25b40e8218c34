"""[5/9] Presence: who is live, and what work waits with nobody live to take it.

On every backend, with a clock the test moves: a connected session, a
waiting agent and a held claim each make a swarm live; a mark its process no
longer refreshes goes stale after its ttl and a lapsed claim stops counting,
so the swarm is dead without anyone deleting anything; an available task only
dead swarms cover is unattended, and one a stopped swarm alone covers too.
"""

from __future__ import annotations

from infrafabric.bus import EventBus
from infrafabric.coordinator import IFCoordinator, Task, TaskStatus
from infrafabric.coordinator.core import PRESENCE_TTL
from infrafabric.coordinator.models import Presence
from infrafabric.coordinator.presence import liveness, unattended
from infrafabric.fleet import assemble
from support import Clock


async def test_connected_waiting_and_holding_swarms_are_live_and_stale_marks_are_dead(bus: EventBus) -> None:
    clock = Clock()
    coord = IFCoordinator(bus, clock=clock)
    await coord.register_swarm("py", ["code:python"])
    await coord.register_swarm("rs", ["code:rust"])
    await coord.register_swarm("idle", ["code:python"])
    await coord.create_task({"id": "T-py", "title": "p", "capabilities": ["code:python"]})
    await coord.create_task({"id": "T-rs", "title": "r", "capabilities": ["code:rust"]})
    await coord.create_task({"id": "T-go", "title": "g", "capabilities": ["code:go"]})

    states = await coord.liveness()
    assert {sid for sid, s in states.items() if s.live} == set()
    assert [t.id for t in await coord.unattended()] == ["T-go", "T-py", "T-rs"]

    async with coord.present("py", via="mcp"):
        assert await coord.claim_task("rs", "T-rs")  # a claim with the default lease
        states = await coord.liveness()
        assert states["py"].live and states["py"].because[0].startswith("connected via mcp")
        assert states["rs"].live and states["rs"].because == ["holds T-rs"]
        assert not states["idle"].live and states["idle"].last_seen is None
        # T-py: py is live and covers it; T-rs is claimed, not waiting; T-go: nobody covers it
        assert [t.id for t in await coord.unattended()] == ["T-go"]

        clock.now += 10_000  # py's process stopped refreshing, rs's claim lapsed without a heartbeat
        states = await coord.liveness()
        assert not states["py"].live and states["py"].last_seen == clock.now - 10_000
        assert not states["rs"].live
    assert "py" not in {s for s, st in (await coord.liveness()).items() if st.live}  # ended: mark gone


async def test_a_stopped_swarm_does_not_attend_work(bus: EventBus, tmp_path: object) -> None:
    clock = Clock()
    fleet = assemble(bus, clock=clock)
    await fleet.governor.ensure_profile("py", ["code:python"])
    await fleet.coordinator.create_task({"id": "T1", "title": "t", "capabilities": ["code:python"]})
    async with fleet.coordinator.present("py", via="mcp"):
        assert await fleet.coordinator.unattended() == []
        await fleet.governor.trip("py", "test", by="ops")  # its breaker open: it will not be admitted
        assert [t.id for t in await fleet.coordinator.unattended()] == ["T1"]


def test_the_rule_is_pure_and_counts_any_mark() -> None:
    now = 1_000.0

    def mark(sid: str, seen: float, via: str = "mcp") -> Presence:
        return Presence(swarm_id=sid, via=via, host="h", pid=1, since=seen, seen_at=seen, ttl=PRESENCE_TTL)

    claimed = Task(id="T1", title="t", status=TaskStatus.CLAIMED, owner="c", lease_until=now + 1)
    lapsed = Task(id="T2", title="t", status=TaskStatus.CLAIMED, owner="d", lease_until=now - 1)
    states = liveness(["a", "b", "c", "d"], presence=[mark("a", now - PRESENCE_TTL)],
                      waiting=[mark("b", now - PRESENCE_TTL - 0.1, "next_task")], tasks=[claimed, lapsed],
                      now=now)
    assert [s for s in "abcd" if states[s].live] == ["a", "c"]
    assert states["b"].last_seen == now - PRESENCE_TTL - 0.1
    open_ = Task(id="T3", title="t", status=TaskStatus.AVAILABLE, capabilities=["x", "y", "z"])
    caps = {"a": ["x", "y"], "c": ["x", "y", "z"]}
    assert unattended([open_], caps, ["a"], threshold=0.7) == [open_]  # 67 % < 70 %
    assert unattended([open_], caps, ["a"], threshold=0.6) == []
    assert unattended([open_], caps, ["c"], threshold=0.7, refused=["c"]) == [open_]
