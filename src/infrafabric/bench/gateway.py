"""``ifctl bench gateway``: what an agent on another machine pays for its tools.

An agent machine reaches the fleet through the agent gateway that ``ifctl
coordinator start --listen`` runs: HTTPS, a bearer token checked on every
request, the governed and witnessed tools behind it. What is timed is what
its ``ifctl mcp`` does for the agent, in one run on one bus (a fresh
namespace), with ``agents`` agents working at once:

* **gateway**: ``task_next`` (claim) and ``task_complete`` (finish), each a
  tool call on a kept MCP session over TLS to a real gateway process;
* **served**: the same two calls on the agent tools in this process
  (:class:`~infrafabric.agent.session.AgentSession` on a watching
  coordinator), what an agent's own ``ifctl mcp`` on the coordinator's
  machine does; the difference is what the gateway adds;
* **connect**: opening a session with the gateway (TLS handshake, token
  check, MCP initialize), as after a gateway restart;
* **bus CAS**: one compare-and-swap on the bus in the same run (the floor
  under every claim).

Targets (reported, never asserted): what the gateway adds to a claim at p50,
at most :data:`ADDED_TARGET_MS`; a claim through it within
:data:`P99_TARGET_MS` at p99.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from infrafabric.agent.gateway import Gateway
from infrafabric.agent.remote import Remote, call_in
from infrafabric.agent.session import AgentSession
from infrafabric.agent.tokens import AgentTokens
from infrafabric.bench._common import (
    Progress,
    clean_namespace,
    machine_info,
    started_at,
    target_row,
    with_namespace,
)
from infrafabric.bench.stats import summarize
from infrafabric.bus import connect
from infrafabric.fleet import assemble

__all__ = ["ADDED_TARGET_MS", "P99_TARGET_MS", "bench_gateway"]

ADDED_TARGET_MS = 10.0
P99_TARGET_MS = 50.0


async def bench_gateway(url: str, *, n: int, agents: int, progress: Progress | None = None) -> dict[str, Any]:
    """Run the benchmark on the bus at ``url``: ``agents`` agents each claim
    and complete ``n`` tasks through the gateway, and as many in-process."""
    begun = time.time()
    ns = f"bench-gw-{uuid.uuid4().hex[:8]}"
    target = with_namespace(url, ns)
    home = Path(tempfile.mkdtemp(prefix="if-bench-gateway-"))
    gateway = Gateway(home)
    samples: dict[str, list[int]] = {k: [] for k in ("gateway_next", "gateway_complete", "served_next",
                                                      "served_complete", "connect", "bus_cas")}
    try:
        info, _ = gateway.start("127.0.0.1", 0, names=["127.0.0.1"], bus=target, embedded=False, tls=None)
        async with connect(target) as bus:
            fleet = assemble(bus, signer=None)
            try:
                for side in ("gateway", "served"):
                    await fleet.coordinator.create_tasks([
                        {"id": f"{side}-{i:06d}", "title": f"{side} {i}", "capabilities": [f"bench:{side}"]}
                        for i in range(agents * n)])
                tokens = AgentTokens(fleet)
                secrets: list[str] = []
                for a in range(agents):
                    await fleet.register_swarm(f"gw-{a}", ["bench:gateway"])
                    await fleet.register_swarm(f"sv-{a}", ["bench:served"])
                    secrets.append((await tokens.issue(f"gw-{a}", name=f"bench-gw-{a}", by="bench"))[0])
                # a watching coordinator, as the gateway (and any agent's ifctl mcp) runs one
                await fleet.coordinator.start()
                if progress is not None:
                    progress("bus CAS", 0, 1)
                await _bus_cas(bus, n, samples["bus_cas"])
                if progress is not None:
                    progress("served", 0, 1)
                await asyncio.gather(*(_served(fleet, f"sv-{a}", n, samples) for a in range(agents)))
                if progress is not None:
                    progress("gateway", 0, 1)
                remotes = [Remote(info.url, secret, Path(info.ca) if info.ca else None) for secret in secrets]
                await asyncio.gather(*(_through(remote, n, samples) for remote in remotes))
            finally:
                await fleet.close()
                await clean_namespace(bus, progress)
    finally:
        gateway.stop()
        shutil.rmtree(home, ignore_errors=True)
    ops = {name: summarize(values) for name, values in samples.items()}
    gateway_next, served_next = ops["gateway_next"]["p50"], ops["served_next"]["p50"]
    added = None if gateway_next is None or served_next is None else round(gateway_next - served_next, 3)
    targets = [
        target_row("gateway-added-p50", f"what the gateway adds to a claim at p50 <= {ADDED_TARGET_MS:g} ms",
                   "task_next", "p50 gateway - p50 served", ADDED_TARGET_MS, added, applies=True),
        target_row("gateway-p99", f"a claim through the gateway within {P99_TARGET_MS:g} ms at p99",
                   "task_next", "p99", P99_TARGET_MS, ops["gateway_next"]["p99"], applies=True,
                   note=f"bus CAS p99 in this run: {ops['bus_cas']['p99']} ms"),
    ]
    return {"benchmark": "gateway", "started_at": started_at(begun), "machine": machine_info(),
            "agents": agents, "n": n, "duration_s": round(time.time() - begun, 1), "ops": ops,
            "gateway_added_p50_ms": added, "targets": targets}


async def _bus_cas(bus: Any, n: int, out: list[int]) -> None:
    key = f"bench/cas/{uuid.uuid4().hex}"
    revision: int | None = await bus.put(key, b"0")
    for i in range(n):
        assert revision is not None  # only this loop writes the key
        t = time.perf_counter_ns()
        revision = await bus.update(key, str(i).encode(), revision)
        out.append(time.perf_counter_ns() - t)


async def _served(fleet: Any, swarm_id: str, n: int, samples: dict[str, list[int]]) -> None:
    session = AgentSession(fleet, swarm_id)
    for _ in range(n):
        t = time.perf_counter_ns()
        got = await session.next(wait_s=0)
        samples["served_next"].append(time.perf_counter_ns() - t)
        t = time.perf_counter_ns()
        await session.complete(got["task"]["id"], claim_id=got["claim_id"])
        samples["served_complete"].append(time.perf_counter_ns() - t)


async def _through(remote: Remote, n: int, samples: dict[str, list[int]]) -> None:
    t = time.perf_counter_ns()
    async with remote.client() as session:
        samples["connect"].append(time.perf_counter_ns() - t)
        for _ in range(n):
            t = time.perf_counter_ns()
            got = await call_in(session, "task_next", {"wait_s": 0})
            samples["gateway_next"].append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            done = {"task_id": got["task"]["id"], "claim_id": got["claim_id"]}
            await call_in(session, "task_complete", done)
            samples["gateway_complete"].append(time.perf_counter_ns() - t)
