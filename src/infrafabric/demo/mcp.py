"""``ifctl demo --via mcp``: a small project worked by agents that speak MCP, as real ones do.

Each agent is an MCP client (the official SDK's stdio client) that starts
its own ``ifctl mcp`` server, exactly as Claude Code, Codex or Cursor start
the one registered with them, and follows the protocol the server's
instructions give: ``task_next`` (with the results of the tasks it depends
on), ``task_heartbeat`` with a progress note, ``task_complete`` with a
summary, a commit and its cost. Along the way:

* an agent asks to stop while it holds a task: its Stop hook (``ifctl hook
  claude stop``, fed Claude Code's payload) refuses and says what to do;
* one agent's session dies (its server is killed with SIGKILL mid-task): its
  claim lapses after the lease, and another agent takes the task over with
  the dead agent's last progress note.

The demo runs in its own namespace (``mcpdemo``) of the bus, cleared first,
so it never touches other work; the end says how to look at what it left.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infrafabric.bus import connect
from infrafabric.bus.url import with_options
from infrafabric.fleet import assemble
from infrafabric.governor import format_usd, usd

__all__ = ["NAMESPACE", "McpDemoReport", "run_mcp_demo"]

NAMESPACE = "mcpdemo"
LEASE = 4.0
#: (swarm, capabilities, how long one step of work takes): every task is covered by two agents at
#: least, so whichever session dies, another can take its task over
AGENTS: list[tuple[str, list[str], float]] = [
    ("claude-1", ["code:python", "testing:unit", "docs:markdown"], 0.4),
    ("codex-2", ["code:python", "testing:unit"], 0.5),
    ("cursor-3", ["docs:markdown", "code:python"], 0.3),
]
BOARD: list[dict[str, Any]] = [
    {"id": "M1", "title": "Parse the board file", "capabilities": ["code:python"],
     "acceptance_criteria": ["reads the seed board"], "deliverable": "src/board.py"},
    {"id": "M2", "title": "Claim tasks atomically", "capabilities": ["code:python"], "dependencies": ["M1"],
     "acceptance_criteria": ["two agents never hold one task"]},
    {"id": "M3", "title": "Lease expiry", "capabilities": ["code:python"], "dependencies": ["M1"]},
    {"id": "M4", "title": "Unit tests for claims", "capabilities": ["testing:unit"], "dependencies": ["M2"]},
    {"id": "M5", "title": "Unit tests for leases", "capabilities": ["testing:unit"], "dependencies": ["M3"]},
    {"id": "M6", "title": "Write the agent guide", "capabilities": ["docs:markdown"], "dependencies": ["M2"]},
    {"id": "M7", "title": "Write the runbook", "capabilities": ["docs:markdown"], "dependencies": ["M3"]},
    {"id": "M8", "title": "Release notes", "capabilities": ["docs:markdown"],
     "dependencies": ["M4", "M5", "M6", "M7"]},
]
STOP_PAYLOAD = {"session_id": "demo", "transcript_path": "/dev/null", "cwd": "/", "hook_event_name": "Stop",
                "stop_hook_active": False, "last_assistant_message": "I think I am done for today."}


@dataclass
class McpDemoReport:
    """What the demo did, drawn from the bus at the end."""

    url: str
    log: list[str] = field(default_factory=list)
    completed_by: dict[str, str] = field(default_factory=dict)
    killed: str | None = None
    orphan: str | None = None
    orphan_taken_by: str | None = None
    handed_note: str | None = None
    stop_refused: str | None = None
    spent: dict[str, str] = field(default_factory=dict)
    witness: str = ""
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "log"} | {"log": self.log}


async def run_mcp_demo(base_url: str, *, on_line: Callable[[str], None] = lambda line: None) -> McpDemoReport:
    """Run the demo on the bus at ``base_url`` (its ``mcpdemo`` namespace)."""
    from mcp import Client, StdioServerParameters, stdio_client

    started = time.monotonic()
    url = with_options(base_url, namespace=NAMESPACE)
    report = McpDemoReport(url=url)

    def say(line: str) -> None:
        report.log.append(line)
        on_line(line)

    ifctl = str(Path(sys.executable).parent / "ifctl")
    async with connect(url) as bus:
        for entry in await bus.list(""):  # the previous run's: this namespace is the demo's alone
            await bus.delete(entry.key)
        fleet = assemble(bus, signer=None, actor="demo")
        await fleet.coordinator.create_tasks(BOARD)
        say(f"board: {len(BOARD)} tasks with dependencies, in namespace {NAMESPACE!r}")
        for swarm, caps, _ in AGENTS:
            await fleet.register_swarm(swarm, caps)
            await fleet.governor.set_budget(swarm, usd("5"))

        # the servers' own messages would drown the story
        quiet = await asyncio.to_thread(open, os.devnull, "w")
        with tempfile.TemporaryDirectory(prefix="if-mcp-demo-") as home, quiet:
            env = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | {
                "IF_BUS_URL": url, "IF_HOME": home}
            async def agent(swarm: str, caps: list[str], step: float, *, fresh: bool = False) -> None:
                """One agent: an MCP client of its own `ifctl mcp`, as its client would start it."""
                params = StdioServerParameters(
                    command=ifctl, args=["mcp", "--swarm", swarm, "--lease", str(LEASE)]
                    + [a for c in caps for a in ("--cap", c)], env=env)
                async with Client(stdio_client(params, errlog=quiet)) as client:
                    await work(client, swarm, step, fresh)

            async def work(client: Any, swarm: str, step: float, fresh: bool) -> None:
                done = 0
                while True:
                    got = await _call(client, "task_next", wait_s=2)
                    task = got.get("task")
                    if task is None:
                        if got["reason"] in ("all_done", "no_covered_task"):
                            say(f"{swarm}: task_next → nothing left for me ({got['reason']}); leaving")
                            return
                        continue  # claimed or blocked for now: wait for a push again
                    deps = ", ".join(d["id"] for d in got["dependencies"]) or "none"
                    say(f"{swarm}: task_next → {task['id']} {task['title']!r} (lease {got['lease_s']:.0f} s; "
                        f"results of {deps} included)")
                    if "last_progress" in task:
                        report.handed_note = task["last_progress"]
                        say(f"{swarm}:   takes over where the last holder stopped: {task['last_progress']!r}")
                    await _call(client, "task_heartbeat", task_id=task["id"],
                                note=f"{swarm}: half of {task['id']} done")
                    if report.stop_refused is None:
                        report.stop_refused = await _stop_hook(ifctl, env, swarm)
                        say(f"{swarm}: tries to stop → its Stop hook answers: {report.stop_refused}")
                    if done == 1 and not fresh and report.killed is None:  # the first to come back for more
                        report.killed, report.orphan = swarm, task["id"]
                        present = (await fleet.coordinator.present_swarms())[swarm]
                        if present.host != socket.gethostname():  # never kill a process on another machine
                            raise RuntimeError(f"{swarm}'s server runs on {present.host}, not here")
                        pid = present.pid
                        say(f"{swarm}: its session dies mid-task (ifctl mcp pid {pid} killed with SIGKILL) "
                            f"holding {task['id']}")
                        os.kill(pid, signal.SIGKILL)
                        return
                    await asyncio.sleep(step)
                    answer = await _call(client, "task_complete", task_id=task["id"],
                                         summary=f"{task['title']}: done", commit=f"c0ffee{task['id']}",
                                         cost_usd="0.05", claim_id=got["claim_id"])
                    done += 1
                    report.completed_by[task["id"]] = swarm
                    unblocked = answer.get("unblocked")
                    say(f"{swarm}: task_complete {task['id']} (cost $0.05)"
                        + (f" → unblocked {', '.join(unblocked)}" if unblocked else ""))

            async def run_agent(swarm: str, caps: list[str], step: float) -> None:
                try:
                    await agent(swarm, caps, step)
                except Exception:
                    if report.killed != swarm:  # only the killed one's client may see its server vanish
                        raise

            await asyncio.gather(*(run_agent(*a) for a in AGENTS))
            if report.orphan is not None:
                orphan = await fleet.coordinator.get_task(report.orphan)
                if orphan.status.value != "completed":  # everyone else left before the lease lapsed
                    say(f"{report.killed} restarts in a new session")
                    spec = next(a for a in AGENTS if a[0] == report.killed)
                    await agent(*spec, fresh=True)
                report.orphan_taken_by = report.completed_by.get(report.orphan)
                say(f"{report.orphan}: its claim lapsed after {LEASE:g} s and {report.orphan_taken_by} "
                    "completed it")

        for swarm, _, _ in AGENTS:
            budget = await fleet.governor.budget(swarm)
            if budget is not None:
                report.spent[swarm] = format_usd(budget.spent_micros)
        result = await fleet.witness.verify()
        report.witness = f"intact: {result.entries} entries" if result.ok else f"TAMPERED: {result.problem}"
        say(f"witness: {report.witness}")
    report.duration_s = round(time.monotonic() - started, 1)
    return report


async def _call(client: Any, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    text = result.content[0].text
    if result.is_error:
        raise RuntimeError(f"{tool}: {text}")
    answer: dict[str, Any] = json.loads(text)
    return answer


async def _stop_hook(ifctl: str, env: dict[str, str], swarm: str) -> str:
    done = await asyncio.to_thread(subprocess.run, [ifctl, "hook", "claude", "stop"],
                                   input=json.dumps(STOP_PAYLOAD), env=env | {"IF_SWARM_ID": swarm},
                                   capture_output=True, text=True, timeout=60)
    reason: str = json.loads(done.stdout)["reason"] if done.stdout.strip() else "(allowed to stop)"
    return reason
