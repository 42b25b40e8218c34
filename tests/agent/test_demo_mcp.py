"""``ifctl demo --via mcp``: the documented demo of agents that speak MCP, on
real NATS: every task done exactly once, the Stop hook refusing a stop, a
killed session's task taken over with its progress note, the chain intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infrafabric.bus import connect
from infrafabric.bus.servers import NatsServer
from infrafabric.bus.url import with_options
from infrafabric.coordinator import IFCoordinator, TaskStatus
from infrafabric.demo.mcp import BOARD, NAMESPACE

pytestmark = [pytest.mark.engine, pytest.mark.timeout(180)]


async def test_the_mcp_demo_works_the_board_through_mcp(nats_server: NatsServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | {
        "IF_BUS_URL": nats_server.url, "IF_HOME": str(tmp_path)}
    ifctl = str(Path(sys.executable).parent / "ifctl")
    done = subprocess.run([ifctl, "demo", "--via", "mcp", "--json"], env=env, capture_output=True, text=True,
                          timeout=170)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["completed_by"]) == {t["id"] for t in BOARD}
    assert report["killed"] and report["orphan"] and report["orphan_taken_by"]
    assert report["handed_note"] == f"{report['killed']}: half of {report['orphan']} done"
    assert report["stop_refused"].startswith("You still hold")
    assert report["witness"].startswith("intact")
    async with connect(with_options(nats_server.url, namespace=NAMESPACE)) as bus:
        for task in await IFCoordinator(bus).list_tasks():
            assert task.status is TaskStatus.COMPLETED
            completions = [h for h in task.history if h.to is TaskStatus.COMPLETED]
            assert len(completions) == 1, task.id  # done exactly once, the orphan included
