"""The seed's "connection failure recovery" scenario on the real engines: the
server is killed and restarted under a coordinator that is working; calls
during the outage fail with typed errors (never a wrong answer, never a hang),
and afterwards the same coordinator objects carry on — including the lease
watcher, whose watch resumes by itself."""

from __future__ import annotations

import asyncio

import pytest

from infrafabric.bus import connect
from infrafabric.bus.servers import LocalServer
from infrafabric.coordinator import IFCoordinator, TaskStatus
from infrafabric.errors import BusTimeoutError, BusUnavailableError

GUARD = 30.0




async def until_healthy(coord: IFCoordinator) -> None:
    async with asyncio.timeout(GUARD):
        # the restarted server gives no event to wait on; probing it is the point
        while not await coord.bus.health_check():  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def test_coordinator_survives_a_server_restart(own_engine: LocalServer) -> None:
    async with connect(f"{own_engine.url}?timeout=2") as bus, \
            IFCoordinator(bus, lease_ttl=1.0) as coord:
        await coord.register_swarm("a")
        await coord.register_swarm("b")
        await coord.create_tasks([{"id": "one", "title": "1"}, {"id": "two", "title": "2",
                                                                  "dependencies": ["one"]}])
        first = await coord.try_claim("a", "one")
        assert first.won

        own_engine.kill()
        async with asyncio.timeout(GUARD):
            with pytest.raises((BusUnavailableError, BusTimeoutError)):
                await coord.claim_task("b", "one")
        await asyncio.sleep(1.5)  # the outage outlasts the 1 s lease
        own_engine.start()
        await until_healthy(coord)

        # the acknowledged claim survived; the lease lapsed during the outage,
        # and the restarted watcher hands the task out again
        async with coord.pushed_tasks("b") as pushes:
            task = await coord.get_task("one")
            if task.status is TaskStatus.CLAIMED:  # not yet expired by the watcher
                pushed = await pushes.get(GUARD)
                assert pushed.id == "one"
        assert await coord.claim_task("b", "one")
        await coord.complete_task("b", "one", "after restart")
        assert (await coord.get_task("two")).status is TaskStatus.AVAILABLE
        history = [(h.to, h.by) for h in (await coord.get_task("one")).history]
        assert (TaskStatus.CLAIMED, "a") in history and (TaskStatus.COMPLETED, "b") in history
