"""A test agent that claims a task with a worktree, commits on its branch,
leaves a progress note and holds the claim until it is killed (SIGKILL):
``python holder.py URL SWARM REPO WORKTREE_ROOT``. Prints ``ready <task>``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from infrafabric.bus import connect
from infrafabric.coordinator import IFCoordinator
from infrafabric.workspace import open_worktree


async def main(url: str, swarm: str, repo: str, root: str) -> None:
    os.chdir(repo)
    async with connect(url) as bus, IFCoordinator(bus, lease_ttl=2.0) as coord:
        outcome = await coord.next_task(swarm)
        assert outcome is not None and outcome.claim_id is not None, "no task"
        handoff = await open_worktree(coord, outcome, root)
        tree = handoff.worktree.path
        (tree / "src" / "api" / "parser.py").write_text("def parse(): ...\n")
        subprocess.run(["git", "add", "-A"], cwd=tree, check=True)
        subprocess.run(["git", "commit", "-q", "--no-verify", "-m", "half of the parser"], cwd=tree,
                       check=True)
        await coord.heartbeat(swarm, outcome.task_id, outcome.claim_id, note="parser half done; lexer next")
        print(f"ready {outcome.task_id}", flush=True)
        async with coord.holding(swarm, outcome.task_id, outcome.claim_id, interval=0.5):
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
