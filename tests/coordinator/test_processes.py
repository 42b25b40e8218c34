"""The coordinator across OS processes on the real engines (memory:// cannot
be shared between processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from infrafabric.bus import connect
from infrafabric.coordinator import IFCoordinator, TaskStatus
from infrafabric.errors import NotOwnerError

IFCTL = str(Path(sys.executable).with_name("ifctl"))
WORKER = str(Path(__file__).with_name("agent_worker.py"))
AGENTS, TASKS = 4, 24




AGENT_LOOP = """
set -u
while out=$("$IFCTL" task next --swarm "$SWARM" --json); do
    id=$(printf '%s' "$out" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
    echo "$id"
    "$IFCTL" task complete "$id" --swarm "$SWARM" --result "$SWARM" >/dev/null || echo "LOST $id"
done
"""


async def test_agents_running_task_next_do_every_task_exactly_once(engine_url: str, tmp_path: Path) -> None:
    async with connect(engine_url) as bus:
        coord = IFCoordinator(bus)
        for i in range(AGENTS):
            await coord.register_swarm(f"agent-{i}")
        # a chain of dependencies plus independent work, so completions unblock tasks
        specs = [{"id": f"T{i:02d}", "title": f"task {i}",
                  "dependencies": [f"T{i - 1:02d}"] if i % 6 else []} for i in range(TASKS)]
        await coord.create_tasks(specs)
        env = {**os.environ, "IF_BUS_URL": engine_url, "IF_HOME": str(tmp_path),
               "IFCTL": IFCTL, "PY": sys.executable}
        procs = [subprocess.Popen(["bash", "-c", AGENT_LOOP], env={**env, "SWARM": f"agent-{i}"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(AGENTS)]
        outputs = [await asyncio.to_thread(p.communicate, timeout=240) for p in procs]
        claimed = [line for out, _ in outputs for line in out.split()]
        assert not [c for c in claimed if c == "LOST"], outputs
        counts = Counter(claimed)
        assert sorted(counts) == [s["id"] for s in specs], outputs
        assert max(counts.values()) == 1, f"done twice: {[k for k, v in counts.items() if v > 1]}"
        tasks = await coord.list_tasks()
        assert {t.status for t in tasks} == {TaskStatus.COMPLETED}
        for t in tasks:
            assert [h.to for h in t.history].count(TaskStatus.COMPLETED) == 1
            assert t.result == t.owner  # completed by the agent that held it


async def test_killed_agent_task_is_reclaimed_and_late_completion_refused(engine_url: str) -> None:
    async with connect(engine_url) as bus:
        coord = IFCoordinator(bus)
        await coord.register_swarm("doomed")
        await coord.register_swarm("rescuer")
        await coord.create_task({"id": "work", "title": "the only task"})
        holder = subprocess.Popen([sys.executable, WORKER, engine_url, "doomed", "hold", "1.0"],
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "claimed work"
        assert await coord.get_task_owner("work") == "doomed"
        rescuer = subprocess.Popen([sys.executable, WORKER, engine_url, "rescuer", "take", "1.0"],
                                   stdout=subprocess.PIPE, text=True)
        try:
            os.kill(holder.pid, signal.SIGKILL)  # dies mid-task, lease unrenewed
            holder.wait(10)
            out, _ = await asyncio.to_thread(rescuer.communicate, timeout=60)
        finally:
            for p in (holder, rescuer):
                if p.poll() is None:
                    p.kill()
        assert out.strip() == "claimed work"
        task = await coord.get_task("work")
        assert task.status is TaskStatus.COMPLETED and task.owner == "rescuer"
        reasons = [h.reason for h in task.history]
        assert "lease of doomed lapsed" in reasons
        assert [h.by for h in task.history if h.to is TaskStatus.CLAIMED] == ["doomed", "rescuer"]
        with pytest.raises(NotOwnerError):
            await coord.complete_task("doomed", "work", "too late")
        assert (await coord.get_task("work")).result == "done"


async def test_completion_after_lease_passed_on_is_refused(engine_url: str) -> None:
    async with connect(engine_url) as bus:
        slow = IFCoordinator(bus, lease_ttl=0.5)
        await slow.register_swarm("slow")
        await slow.register_swarm("fast")
        await slow.create_task({"id": "t", "title": "t"})
        first = await slow.try_claim("slow", "t")
        assert first.won
        async with IFCoordinator(bus, lease_ttl=30) as fast, fast.pushed_tasks("fast") as pushes:
            pushed = await pushes.get(10)  # the watcher pushes the lapsed task
            assert pushed.id == "t"
            assert await fast.claim_task("fast", "t")
        with pytest.raises(NotOwnerError):
            await slow.complete_task("slow", "t", "late", first.claim_id)
        with pytest.raises(NotOwnerError):
            await slow.heartbeat("slow", "t", first.claim_id)
        assert (await slow.get_task("t")).owner == "fast"
