"""Real ``ifctl mcp`` processes driven by the SDK's stdio client, on real NATS
and etcd: the protocol end to end, two servers racing for one task, and a
killed server's claim coming back after its lease."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from infrafabric import open_fleet
from infrafabric.bus import connect
from infrafabric.fleet import assemble

pytestmark = [pytest.mark.engine, pytest.mark.timeout(120)]

IFCTL = shutil.which("ifctl", path=str(Path(sys.executable).parent)) or "ifctl"


def server(url: str, swarm: str, *caps: str, lease: float = 600, home: Path | None = None) -> Client:
    env = {"IF_BUS_URL": url, "PYTHONUNBUFFERED": "1"}
    if home is not None:
        env["IF_HOME"] = str(home)
    args = ["mcp", "--swarm", swarm, "--lease", str(lease)] + [a for c in caps for a in ("--cap", c)]
    return Client(StdioServerParameters(command=IFCTL, args=args, env=env))


async def call(c: Client, tool: str, **args: Any) -> Any:
    result = await c.call_tool(tool, args)
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)  # type: ignore[union-attr]


async def seed(url: str, *tasks: dict[str, Any]) -> None:
    async with connect(url) as bus:
        await assemble(bus, signer=None).coordinator.create_tasks(list(tasks))


async def test_a_real_server_claims_heartbeats_and_completes(engine_url: str, tmp_path: Path) -> None:
    await seed(engine_url, {"id": "T1", "title": "one", "capabilities": ["code:python"]})
    async with server(engine_url, "agent-1", "code:python", home=tmp_path) as c:
        got = await call(c, "task_next", wait_s=5)
        assert got["task"]["id"] == "T1"
        await call(c, "task_heartbeat", task_id="T1", note="half way")
        done = await call(c, "task_complete", task_id="T1", summary="done", claim_id=got["claim_id"])
        assert done["status"] == "completed"
        async with open_fleet(engine_url, watch=False, signer=None) as fleet:
            assert "agent-1" in await fleet.coordinator.present_swarms()
            entries = [e.operation async for e in fleet.witness.entries()]
    assert {"task_claimed", "task_completed", "swarm_registered"} <= set(entries)
    async with open_fleet(engine_url, watch=False, signer=None) as fleet:  # gone once it hung up
        assert "agent-1" not in await fleet.coordinator.present_swarms()


async def test_two_servers_race_for_one_task_and_one_wins(engine_url: str, tmp_path: Path) -> None:
    await seed(engine_url, {"id": "ONLY", "title": "the one task"})
    async with server(engine_url, "racer-a", home=tmp_path) as a, \
            server(engine_url, "racer-b", home=tmp_path) as b:
        got = await asyncio.gather(call(a, "task_next", wait_s=3), call(b, "task_next", wait_s=3))
    won = [g for g in got if g["task"] is not None]
    assert len(won) == 1 and won[0]["task"]["id"] == "ONLY"
    lost = next(g for g in got if g["task"] is None)
    assert lost["reason"] in ("waiting", "all_done")


async def test_a_killed_servers_claim_comes_back_after_its_lease(engine_url: str, tmp_path: Path) -> None:
    await seed(engine_url, {"id": "T1", "title": "orphan me"})
    async with server(engine_url, "doomed", lease=2, home=tmp_path) as c:
        got = await call(c, "task_next", wait_s=5)
        assert got["task"]["id"] == "T1"
        async with open_fleet(engine_url, watch=False, signer=None) as fleet:
            pid = (await fleet.coordinator.present_swarms())["doomed"].pid
        os.kill(pid, signal.SIGKILL)
        async with open_fleet(engine_url, signer=None) as fleet:
            await fleet.register_swarm("heir", [])
            outcome = await fleet.coordinator.next_task("heir", wait=20)
            assert outcome is not None and outcome.task_id == "T1"
