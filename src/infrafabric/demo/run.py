"""The demo: a small board with dependencies worked by agent processes
through the coordinator, one of which is killed mid-task."""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infrafabric.bus import connect
from infrafabric.bus.url import with_options
from infrafabric.coordinator import IFCoordinator, TaskEvent, TaskStatus
from infrafabric.errors import InfraFabricError
from infrafabric.witness import Witness

LEASE = 2.0


def percentiles(samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        return {}
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": round(q[49], 3), "p95": round(q[94], 3), "p99": round(q[98], 3),
            "max": round(max(samples), 3)}


@dataclass
class DemoReport:
    url: str
    namespace: str
    agents: list[str]
    tasks: int
    completed: int = 0
    done_by: dict[str, int] = field(default_factory=dict)
    completions_per_task: dict[str, int] = field(default_factory=dict)
    claims_won: int = 0
    claims_lost: int = 0
    claim_ms: list[float] = field(default_factory=list)
    handout_ms: list[float] = field(default_factory=list)
    killed: str | None = None
    witness_entries: int = 0
    witness_ok: bool = False
    witnessed: dict[str, int] = field(default_factory=dict)
    killed_task: str | None = None
    reclaimed_by: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.completed == self.tasks
                and all(n == 1 for n in self.completions_per_task.values())
                and (self.killed is None or self.reclaimed_by not in (None, self.killed))
                and self.witness_ok)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url, "namespace": self.namespace, "agents": self.agents, "tasks": self.tasks,
            "completed": self.completed, "done_exactly_once": all(
                n == 1 for n in self.completions_per_task.values()),
            "done_by": self.done_by, "claims_won": self.claims_won, "claims_lost": self.claims_lost,
            "claim_latency_ms": percentiles(self.claim_ms),
            "available_to_claimed_ms": percentiles(self.handout_ms),
            "killed_agent": self.killed, "killed_task": self.killed_task,
            "reclaimed_by": self.reclaimed_by, "seconds": round(self.seconds, 2), "ok": self.ok,
            "witness": {"entries": self.witness_entries, "verified": self.witness_ok,
                        "operations": self.witnessed},
        }


def describe(ev: TaskEvent, progress: Callable[[str], None]) -> None:
    lapsed = "lapsed" in ev.reason
    if ev.status in (TaskStatus.CLAIMED, TaskStatus.COMPLETED) or lapsed:
        note = f"({ev.reason})" if lapsed else ""
        progress(f"{ev.task_id} {ev.status.value:<9} {ev.owner or ev.by or ''} {note}")


def demo_board(n: int) -> list[dict[str, Any]]:
    """Chains of four (each task waits for the previous one) and some filler."""
    specs: list[dict[str, Any]] = []
    for i in range(n):
        tid = f"T{i + 1:02d}"
        filler = i % 5 == 4
        deps = [] if filler or i % 4 == 0 or not specs or specs[-1]["kind"] == "filler" \
            else [specs[-1]["id"]]
        specs.append({"id": tid, "title": f"demo task {i + 1}", "dependencies": deps,
                      "kind": "filler" if filler else "critical"})
    return specs


async def run_demo(url: str, *, agents: int = 3, tasks: int = 12, kill_one: bool = True,
                   progress: Callable[[str], None] = lambda _: None) -> DemoReport:
    namespace = f"demo{int(time.time() * 1000)}"
    ns_url = with_options(url, namespace=namespace)
    names = [f"agent-{i + 1}" for i in range(agents)]
    report = DemoReport(url, namespace, names, tasks)
    started = time.perf_counter()
    procs: dict[str, asyncio.subprocess.Process] = {}
    async with connect(ns_url) as bus:
        audit = Witness(bus, actor="orchestrator")
        coord = IFCoordinator(bus, observers=[audit.observer("IF.coordinator")])
        for name in names:
            await coord.register_swarm(name, ["demo"])
        await coord.create_tasks(demo_board(tasks))
        progress(f"board: {tasks} tasks with dependency chains; {agents} agents registered")
        async with coord.events() as events, bus.subscribe("demo/progress") as agent_news:
            try:
                for name in names:
                    procs[name] = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "infrafabric.demo.agent", ns_url, name, str(LEASE),
                        stdin=asyncio.subprocess.DEVNULL)
                progress(f"{agents} agent processes started (lease {LEASE:g} s, heartbeats while working)")
                left: set[str] = set()
                async with asyncio.timeout(60):
                    while len(left) < agents:
                        news_task = asyncio.ensure_future(agent_news.get())
                        event_task = asyncio.ensure_future(events.get())
                        finished, pending = await asyncio.wait(
                            {news_task, event_task}, return_when=asyncio.FIRST_COMPLETED)
                        for p in pending:
                            p.cancel()
                        if event_task in finished:
                            describe(event_task.result(), progress)
                        if news_task in finished:
                            news = json.loads(news_task.result().data)
                            if news["event"] == "claimed" and kill_one and report.killed is None:
                                report.killed, report.killed_task = news["agent"], news["task"]
                                procs[news["agent"]].send_signal(signal.SIGKILL)
                                left.add(news["agent"])
                                progress(f"[bold red]kill -9 {news['agent']}[/] while it holds "
                                         f"{news['task']}; its lease lapses in {LEASE:g} s")
                            elif news["event"] == "left":
                                left.add(news["agent"])
                                report.claims_won += news["won"]
                                report.claims_lost += news["lost"]
                                report.claim_ms += news["claim_ms"]
            finally:
                for proc in procs.values():
                    if proc.returncode is None:
                        try:
                            async with asyncio.timeout(10):
                                await proc.wait()
                        except TimeoutError:
                            proc.kill()
                            await proc.wait()
        board = await coord.list_tasks()
        for task in board:
            completions = [h for h in task.history if h.to is TaskStatus.COMPLETED]
            report.completions_per_task[task.id] = len(completions)
            if task.status is TaskStatus.COMPLETED and task.owner:
                report.completed += 1
                report.done_by[task.owner] = report.done_by.get(task.owner, 0) + 1
            available_at = None
            for h in task.history:
                if h.to is TaskStatus.AVAILABLE:
                    # tasks available from the start waited for the agents to boot
                    available_at = None if h.reason == "created" else h.at
                elif h.to is TaskStatus.CLAIMED and available_at is not None:
                    report.handout_ms.append((h.at - available_at) * 1000)
                    available_at = None
            if task.id == report.killed_task:
                report.reclaimed_by = task.owner
        verified = await audit.verify()
        report.witness_entries, report.witness_ok = verified.entries, verified.ok
        async for e in audit.entries():
            report.witnessed[e.operation] = report.witnessed.get(e.operation, 0) + 1
    if report.completed != tasks:
        raise InfraFabricError(f"the demo board did not finish: {report.completed}/{tasks} tasks done")
    report.seconds = time.perf_counter() - started
    return report
