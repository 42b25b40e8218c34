"""[5/9] Bounded push: a task that becomes available wakes a few waiting agents, not all.

On every backend: a task is pushed to ``push_fanout`` of the agents waiting
for work (marked under ``waiting/`` while they wait), best first, and a burst
spreads over different agents; nobody waiting means nobody is pushed; the
governor's policy sets the fan-out; a long-lived coordinator pushes a task
still available after the window to the next group; an agent waiting in
``next_task`` is marked as waiting only while it waits, and one whose pushed
task a rival took goes back to the ready index.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from infrafabric.bus import EventBus, EventKind, connect
from infrafabric.bus.layout import WAITING, push_subject
from infrafabric.coordinator import IFCoordinator
from infrafabric.coordinator.core import PRESENCE_TTL, PUSH_WINDOW, ClaimOutcome, Feed
from infrafabric.coordinator.models import Presence, Task
from infrafabric.errors import BusTimeoutError
from infrafabric.fleet import assemble
from infrafabric.governor.models import ResourcePolicy

GUARD = 10.0


async def _until_waiting(bus: EventBus, swarm_id: str) -> None:
    """Until ``swarm_id``'s waiting mark is on the bus: watched, not polled."""
    key = WAITING + swarm_id
    async with asyncio.timeout(GUARD), bus.watch(WAITING, start_revision=await bus.revision() + 1) as marks:
        if await bus.get(key) is not None:  # (written before the watch began)
            return
        async for ev in marks:
            if ev.key == key and ev.kind is EventKind.PUT:
                return


async def _drain(feeds: dict[str, Feed[Task]], seconds: float) -> Counter[str]:
    """Which feeds got a push within ``seconds`` (each may get several)."""
    got: Counter[str] = Counter()

    async def one(name: str, feed: Feed[Task]) -> None:
        with contextlib.suppress(TimeoutError):
            while True:
                await feed.get(seconds)
                got[name] += 1

    await asyncio.gather(*(one(n, f) for n, f in feeds.items()))
    return got


async def test_a_task_is_pushed_to_push_fanout_waiting_agents(bus: EventBus) -> None:
    coord = IFCoordinator(bus, push_fanout=3)
    names = [f"s{i}" for i in range(10)]
    for name in names:
        await coord.register_swarm(name)
    async with contextlib.AsyncExitStack() as stack:
        feeds = {n: await stack.enter_async_context(coord.pushed_tasks(n)) for n in names}
        await coord.create_task({"id": "T", "title": "x"})
        got = await _drain(feeds, 0.5)
        assert sum(got.values()) == 3 and set(got.values()) == {1}, got
        # a burst spreads: each task of it wakes its own few, not all the same three
        await coord.create_tasks([{"id": f"B{i}", "title": "x"} for i in range(4)])
        burst = await _drain(feeds, 0.5)
        assert sum(burst.values()) == 12 and len(burst) > 3, burst


async def test_nobody_waiting_means_nobody_is_pushed(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("idle")
    async with bus.subscribe(push_subject("idle")) as raw:  # listening, but not waiting for work
        await coord.create_task({"id": "T", "title": "x"})
        try:
            await raw.get(0.5)
            raise AssertionError("pushed to an agent that was not waiting")
        except TimeoutError:
            pass
    got = await coord.next_task("idle")  # the ready index has it
    assert got is not None and got.task_id == "T"


def _waiting_mark(coord: IFCoordinator, swarm_id: str, capabilities: list[str], *,
                  age: float = 0.0) -> Presence:
    """A waiting mark as an agent in another process writes it, ``age`` seconds old."""
    now = coord.clock() - age
    return Presence(swarm_id=swarm_id, via="next_task", host="elsewhere", pid=1, since=now, seen_at=now,
                    ttl=PRESENCE_TTL, capabilities=capabilities)


async def test_whom_to_push_costs_a_page_of_marks_not_every_waiting_agent(bus: EventBus) -> None:
    """A process with no watcher reads waiting marks only until it has found
    a few pages' worth that cover the task: the same with 10 waiting or 1,000.
    One that can take the task is found past any number that cannot, and the
    marks of agents long dead are deleted on the way (a fresh one is kept)."""
    coord = IFCoordinator(bus, push_fanout=1)
    for i in range(120):  # waiting, but for other work than the task below
        await coord.waiting.put(f"py{i:03d}", _waiting_mark(coord, f"py{i:03d}", ["code:python"]))
    await coord.waiting.put("gone", _waiting_mark(coord, "gone", ["code:rust"], age=PRESENCE_TTL + 120))
    await coord.waiting.put("late", _waiting_mark(coord, "late", ["code:rust"], age=PRESENCE_TTL + 5))
    await coord.waiting.put("rs", _waiting_mark(coord, "rs", ["code:rust"]))
    for name in ("gone", "late", "rs"):
        await coord.register_swarm(name, ["code:rust"])
    async with bus.subscribe(push_subject("rs")) as pushed:
        await coord.create_task({"id": "R", "title": "x", "capabilities": ["code:rust"]})
        assert (await pushed.get(GUARD)).data  # past 120 marks that do not cover it
    assert await coord.waiting.get("gone") is None  # dead for long: deleted by the look
    assert await coord.waiting.get("late") is not None  # (stale a moment: its agent may be back)

    task = (await coord.get_task("R")).model_copy(update={"capabilities": ["code:python"]})
    found = await coord._waiting_covering(task, 1.0, 8)
    assert len(found) == 8 and all(m.capabilities == ["code:python"] for m in found.values())


async def test_the_governor_policy_sets_the_fan_out(bus: EventBus) -> None:
    fleet = assemble(bus, actor="test", signer=None)
    try:
        await fleet.governor.set_policy(ResourcePolicy(push_fanout=1))
        for i in range(4):
            await fleet.register_swarm(f"g{i}", ["code:python"])
        async with contextlib.AsyncExitStack() as stack:
            feeds = {f"g{i}": await stack.enter_async_context(fleet.coordinator.pushed_tasks(f"g{i}"))
                     for i in range(4)}
            await fleet.coordinator.create_task({"id": "T", "title": "x", "capabilities": ["code:python"]})
            got = await _drain(feeds, 0.5)
            assert sum(got.values()) == 1, got
    finally:
        await fleet.close()


async def test_a_task_nobody_took_goes_to_the_next_group_after_the_window(bus: EventBus) -> None:
    async with IFCoordinator(bus, push_fanout=2) as watcher:  # long-lived: it pushes the follow-ups
        names = [f"w{i}" for i in range(5)]
        for name in names:
            await watcher.register_swarm(name)
        async with contextlib.AsyncExitStack() as stack:
            feeds = {n: await stack.enter_async_context(watcher.pushed_tasks(n)) for n in names}
            for _ in range(100):  # the watcher's view of who waits catches up
                if len(await watcher._waiting_now()) == len(names):
                    break
                await asyncio.sleep(0.02)
            one_shot = IFCoordinator(bus, push_fanout=2)  # a CLI process that creates and exits
            await one_shot.create_task({"id": "T", "title": "x"})
            first = await _drain(feeds, PUSH_WINDOW / 2)
            assert sum(first.values()) == 2, first
            later = await _drain(feeds, PUSH_WINDOW * 4)
            assert sum(later.values()) >= 2 and not set(later) & set(first), (first, later)
            assert len(set(first) | set(later)) >= 4


async def test_next_task_is_marked_waiting_only_while_it_waits(bus: EventBus) -> None:
    coord = IFCoordinator(bus)
    await coord.register_swarm("agent")
    waiter = asyncio.ensure_future(coord.next_task("agent", wait=GUARD))
    await _until_waiting(bus, "agent")
    assert "agent" in await coord._waiting_now()
    await IFCoordinator(bus).create_task({"id": "T", "title": "x"})
    got = await asyncio.wait_for(waiter, GUARD)
    assert got is not None and got.task_id == "T"
    assert await coord._waiting_now() == {}
    assert await coord.next_task("agent") is None  # not waiting: no mark written
    assert await coord.waiting.list() == []


async def test_a_push_feed_that_fails_to_open_is_opened_again_within_the_wait(bus: EventBus) -> None:
    """Opening the push subscription timed out (an etcd watch among 1,000
    opening at once): the agent asked to wait, nothing is claimed yet, so the
    wait goes on and the task made available next still reaches it."""
    coord = IFCoordinator(bus)
    await coord.register_swarm("agent")
    real, refused = bus.subscribe, []

    def flaky(subject: str) -> Any:
        stream = real(subject)
        if not refused:
            refused.append(subject)

            async def timed_out() -> None:
                raise BusTimeoutError(f"subscribe {subject}: no answer within 5 s")
            stream.start = timed_out  # type: ignore[method-assign]
        return stream

    bus.subscribe = flaky  # type: ignore[method-assign]
    waiter = asyncio.ensure_future(coord.next_task("agent", wait=GUARD))
    await _until_waiting(bus, "agent")
    await IFCoordinator(bus).create_task({"id": "T", "title": "x"})
    got = await asyncio.wait_for(waiter, GUARD)
    assert refused == [push_subject("agent")] and got is not None and got.task_id == "T"
    looks: list[bool] = []
    first_look = coord._hand_out

    async def counted(*args: Any, **kw: Any) -> Any:
        looks.append(kw.get("fresh", False))
        return await first_look(*args, **kw)

    coord._hand_out = counted  # type: ignore[method-assign]
    refused.clear()  # no time left in the wait: one last look at the index (fresh), not a failure
    assert await coord.next_task("agent", wait=0.01) is None
    assert refused == [push_subject("agent")] and looks == [False, True]


async def test_a_pushed_task_a_rival_took_sends_the_agent_back_to_the_index(bus: EventBus) -> None:
    coord = IFCoordinator(bus, push_fanout=1)
    for name in ("slow", "rival"):
        await coord.register_swarm(name)
    original = coord._claim_whole

    async def rival_first(swarm_id: str, task_id: str, lease_ttl: float | None) -> ClaimOutcome:
        if swarm_id == "slow" and task_id == "A":  # a rival gets there first
            assert await IFCoordinator(bus).claim_task("rival", "A")
        return await original(swarm_id, task_id, lease_ttl)

    coord._claim_whole = rival_first  # type: ignore[method-assign]
    waiter = asyncio.ensure_future(coord.next_task("slow", wait=GUARD))
    await _until_waiting(bus, "slow")
    maker = IFCoordinator(bus, push_fanout=1)
    deliver = maker.push_task_to_swarm

    async def lose_b(swarm_id: str, task: Task | dict[str, object]) -> None:
        if isinstance(task, Task) and task.id != "B":  # B's push goes astray; it is in the index
            await deliver(swarm_id, task)

    maker.push_task_to_swarm = lose_b  # type: ignore[method-assign,assignment]
    await maker.create_task({"id": "B", "title": "x"})
    await maker.create_task({"id": "A", "title": "x"})
    got = await asyncio.wait_for(waiter, GUARD)
    assert got is not None and got.task_id == "B"  # A was lost to the rival; B came from the index
    assert (await coord.get_task("A")).owner == "rival"


async def test_a_watcher_sees_every_waiting_mark_written_before_it_pushes(
        bus: EventBus, bus_url: str) -> None:
    """The watcher's view of the waiting agents is kept by a watch, which lags
    the bus; before it chooses whom to push, it waits until the view holds
    every mark written before (a barrier through the same watch). Else an
    agent that marked itself waiting, found the index empty and slept would
    sleep through a task offered a moment later."""
    async with connect(bus_url) as other_bus, IFCoordinator(bus) as watching:
        agents = IFCoordinator(other_bus)
        for i in range(20):
            async with agents._marked(agents.waiting, f"a{i}", via="next_task", ttl=30):
                assert f"a{i}" in await watching._waiting_now()  # at once, no sleep between


async def test_a_frozen_waiting_view_falls_back_to_reading_the_marks(bus_url: str) -> None:
    async with connect(bus_url + ("&" if "?" in bus_url else "?") + "timeout=1") as quick, \
            IFCoordinator(quick) as watching:
        assert watching._waiting_watcher is not None
        watching._waiting_watcher.cancel()  # its watch stops: the view is behind from now on
        with contextlib.suppress(asyncio.CancelledError):
            await watching._waiting_watcher
        async with watching._marked(watching.waiting, "late", via="next_task", ttl=30):
            assert "late" in await watching._waiting_now()


async def test_the_look_before_waiting_reads_lanes_a_lagging_copy_lacks(bus: EventBus, bus_url: str) -> None:
    """A long-lived coordinator keeps the ready index's lanes by a watch and
    its first look reads them from that copy, which may be a moment behind.
    The look an agent makes after it says it waits reads them from the bus:
    an offer made before the mark, and so pushed to nobody, is still found."""
    async with connect(bus_url) as other_bus, IFCoordinator(bus) as watching:
        await watching.register_swarm("a")
        follower = watching.ready.lanes._follower
        assert follower is not None and watching.ready.lanes.following
        follower.cancel()  # its watch stops; the copy stays, behind from now on
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await IFCoordinator(other_bus).create_task({"id": "T", "title": "x"})  # nobody waits: no push
        got = await asyncio.wait_for(watching.next_task("a", wait=GUARD), GUARD + 5)
        assert got is not None and got.task_id == "T"
