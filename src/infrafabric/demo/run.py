"""Orchestration of the bus demo: tasks pushed to agent processes that race to claim them."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infrafabric.bus import connect
from infrafabric.errors import InfraFabricError


@dataclass
class DemoReport:
    url: str
    namespace: str
    agents: list[str]
    tasks: int
    owners: dict[str, str] = field(default_factory=dict)
    claims_won: int = 0
    claims_lost: int = 0
    push_ms: list[float] = field(default_factory=list)
    claim_ms: list[float] = field(default_factory=list)
    double_owners: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def percentiles(self, samples: list[float]) -> dict[str, float]:
        if len(samples) < 2:
            return {}
        q = statistics.quantiles(samples, n=100, method="inclusive")
        return {"p50": round(q[49], 3), "p99": round(q[98], 3), "max": round(max(samples), 3)}

    def as_dict(self) -> dict[str, Any]:
        per_agent: dict[str, int] = {}
        for owner in self.owners.values():
            per_agent[owner] = per_agent.get(owner, 0) + 1
        return {
            "url": self.url, "namespace": self.namespace, "agents": self.agents,
            "tasks": self.tasks, "claimed": len(self.owners), "claims_won": self.claims_won,
            "claims_lost": self.claims_lost, "tasks_per_agent": per_agent,
            "double_owners": self.double_owners, "push_latency_ms": self.percentiles(self.push_ms),
            "claim_latency_ms": self.percentiles(self.claim_ms), "seconds": round(self.seconds, 2),
        }


async def run_demo(url: str, *, agents: int = 3, tasks: int = 12,
                   progress: Callable[[str], None] = lambda _: None) -> DemoReport:
    """Start ``agents`` agent processes, push ``tasks`` tasks to all of them, and
    report who won each claim. Every task must end with exactly one owner."""
    namespace = f"demo{int(time.time() * 1000)}"
    ns_url = f"{url}{'&' if '?' in url else '?'}namespace={namespace}"
    names = [f"agent-{i + 1}" for i in range(agents)]
    report = DemoReport(url, namespace, names, tasks)
    started = time.perf_counter()
    procs: list[asyncio.subprocess.Process] = []
    async with connect(ns_url) as bus, bus.subscribe("demo/ready") as ready, \
            bus.subscribe("demo/results") as results:
        try:
            for name in names:
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "infrafabric.demo.agent", ns_url, name,
                    stdin=asyncio.subprocess.DEVNULL,
                ))
            waiting = set(names)
            async with asyncio.timeout(30):
                while waiting:
                    waiting.discard((await ready.get()).data.decode())
            progress(f"{agents} agent processes subscribed to their inboxes")
            for i in range(tasks):
                task = f"T{i + 1:03d}"
                await bus.put(f"tasks/{task}", json.dumps({"id": task, "title": f"demo task {i + 1}"}))
                for name in names:  # push to every agent: they race for the claim
                    await bus.publish(f"agents/{name}/inbox",
                                      json.dumps({"task": task, "sent_ns": time.monotonic_ns()}))
            outcomes = 0
            async with asyncio.timeout(30):
                while outcomes < tasks * agents:
                    r = json.loads((await results.get()).data)
                    outcomes += 1
                    report.push_ms.append(r["push_ms"])
                    report.claim_ms.append(r["claim_ms"])
                    if r["won"]:
                        report.claims_won += 1
                        if r["task"] in report.owners:
                            report.double_owners.append(r["task"])
                        report.owners[r["task"]] = r["agent"]
                        progress(f"{r['task']} claimed by {r['agent']} "
                                 f"(push {r['push_ms']:.2f} ms, claim {r['claim_ms']:.2f} ms)")
                    else:
                        report.claims_lost += 1
            for entry in await bus.list("claims/"):
                owner = json.loads(entry.value)["owner"]
                if report.owners.get(entry.key.split("/", 1)[1]) != owner:
                    raise InfraFabricError(f"stored claim {entry.key} disagrees with the winner")
        finally:
            for name in names:
                await bus.publish(f"agents/{name}/inbox", json.dumps({"stop": True}))
            for p in procs:
                try:
                    async with asyncio.timeout(10):
                        await p.wait()
                except TimeoutError:
                    p.kill()
                    await p.wait()
            for key in ("tasks/", "claims/", "results/"):
                for entry in await bus.list(key):
                    await bus.delete(entry.key)
    report.seconds = time.perf_counter() - started
    return report
