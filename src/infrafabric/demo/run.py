"""The demo: the seeds' Phase 0 board worked by the seeds' swarms, each an OS
process, through the coordinator, the governor, the chassis and the witness.

What happens (all on one bus, every operation witnessed):

* the seed task board is imported (each task given capabilities by its section);
* the seeds' swarms — sessions 1-5 and 7 — are registered with capabilities,
  costs, budgets and models, plus ``flaky-agent``, whose code always runs out
  of fuel in the sandbox: after three failures in a row its breaker opens;
* each swarm runs as a separate process (:mod:`infrafabric.demo.agent`) that
  takes tasks with ``next_task`` (pushes, no polling), runs the task module in
  the chassis, pays for it and completes it; session 7 hits a blocker on
  P0.3.6 and the governor sends helpers;
* one agent is killed with SIGKILL while it holds a task; its lease lapses,
  the task is pushed again and another agent completes it; the killed swarm
  is restarted as a new process;
* when the board is done, agents are told to stop and the summary is drawn
  from the bus: tasks, claims, latencies, spend and waste, breakers, witness.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.resources import files
from typing import Any

from infrafabric.bench.stats import nearest_rank
from infrafabric.bus import EventBus
from infrafabric.coordinator import IFCoordinator, TaskEvent, TaskStatus, coverage
from infrafabric.coordinator.board import load_board
from infrafabric.coordinator.infer import apply_inference
from infrafabric.demo.agent import CONTROL, PROGRESS, STOP
from infrafabric.errors import ConfigurationError
from infrafabric.fleet import assemble
from infrafabric.governor import MICROS, BreakerState, ResourcePolicy, SwarmProfile, usd

LEASE = 5.0
MARKER = "demo/run"
FLAKY = "flaky-agent"
#: the longest flaky-agent works alone before the others start
HEAD_START_S = 15.0
BLOCKER_TASK = "P0.3.6"
BLOCKED_SWARM = "session-7-ifbus"

#: the seeds' sessions: (id, capabilities, $/h, model, budget $)
SESSIONS: list[tuple[str, list[str], str, str, str]] = [
    ("session-1-ndi", ["integration:ndi", "docs:technical-writing", "docs:markdown"], "1.50", "haiku", "20"),
    ("session-2-webrtc", ["integration:webrtc", "docs:technical-writing", "infra:networking"],
     "1.50", "haiku", "20"),
    ("session-3-h323", ["integration:h323", "docs:technical-writing", "security:audit", "testing:security"],
     "1.50", "haiku", "20"),
    ("session-4-sip", ["integration:sip", "code-analysis:python", "testing:integration", "security:audit",
                       "testing:security"], "4.00", "sonnet", "30"),
    ("session-5-cli", ["cli:design", "cli:ux", "code-analysis:python", "governance:policy",
                       "testing:performance"], "1.50", "haiku", "30"),
    ("session-7-ifbus", ["infra:distributed-systems", "code-analysis:python", "wasm:runtime",
                         "architecture:design", "security:cryptography"], "4.00", "sonnet", "60"),
    (FLAKY, ["integration:ndi", "docs:technical-writing"], "0.80", "haiku", "10"),
]

def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    return {"n": len(ordered), "p50": round(nearest_rank(ordered, 50), 2),
            "p95": round(nearest_rank(ordered, 95), 2), "p99": round(nearest_rank(ordered, 99), 2),
            "max": round(ordered[-1], 2)}


def seed_board(limit: int | None) -> list[dict[str, Any]]:
    """The seed board's tasks with their inferred capabilities, the first ``limit`` in
    dependency order (so every task's dependencies are included)."""
    board = load_board(str(files("infrafabric.coordinator") / "data" / "phase0-board.md"))
    # the capabilities board import infers (infrafabric.coordinator.infer): a user's import gets the same
    inferred, _ = apply_inference(board.tasks)
    specs = [task.model_dump(mode="json") for task in inferred]
    if limit is not None:
        ordered: list[dict[str, Any]] = []
        done: set[str] = set()
        while len(ordered) < min(limit, len(specs)):
            nxt = next(s for s in specs if s["id"] not in done and set(s["dependencies"]) <= done)
            ordered.append(nxt)
            done.add(nxt["id"])
        specs = ordered
    return specs


@dataclass
class AgentView:
    swarm: str
    state: str = "starting"
    task: str = ""
    done: int = 0
    failed: int = 0
    pid: int | None = None


@dataclass
class DemoReport:
    url: str
    tasks: int
    swarms: list[str]
    views: dict[str, AgentView] = field(default_factory=dict)
    completed: int = 0
    exactly_once: bool = False
    claims_won: int = 0
    claims_refused: int = 0
    claim_ms: list[float] = field(default_factory=list)
    push_ms: list[float] = field(default_factory=list)
    spend: dict[str, int] = field(default_factory=dict)
    wasted_micros: int = 0
    breakers_open: list[str] = field(default_factory=list)
    killed: str | None = None
    killed_task: str | None = None
    reclaimed_by: str | None = None
    blocker_helpers: list[str] = field(default_factory=list)
    witness_entries: int = 0
    witness_ok: bool = False
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.completed == self.tasks and self.exactly_once and self.witness_ok
                and (self.killed is None or self.reclaimed_by is not None))

    def as_dict(self) -> dict[str, Any]:
        total = sum(self.spend.values())
        return {
            "ok": self.ok, "url": self.url, "seconds": round(self.seconds, 1),
            "tasks": self.tasks, "completed": self.completed, "done_exactly_once": self.exactly_once,
            "done_by": {s: v.done for s, v in self.views.items()},
            "claims": {"won": self.claims_won, "refused": self.claims_refused},
            "claim_latency_ms": percentiles(self.claim_ms), "push_to_claim_ms": percentiles(self.push_ms),
            "spend_micros": self.spend, "total_spend_micros": total,
            "waste": round(self.wasted_micros / total, 4) if total else 0.0,
            "breakers_open": self.breakers_open, "killed": self.killed, "killed_task": self.killed_task,
            "reclaimed_by": self.reclaimed_by,
            "blocker": {"task": BLOCKER_TASK, "helpers": self.blocker_helpers},
            "witness": {"entries": self.witness_entries, "verified": self.witness_ok},
        }


async def _prepare(bus: EventBus) -> None:
    """Clear what a previous demo left in this namespace; refuse to touch anything else."""
    marker = await bus.get(MARKER)
    if marker is None:
        async for _ in bus.scan("", batch=1):
            raise ConfigurationError(
                "this bus namespace already holds other work; the demo will not mix with it",
                hint="run it on its own: ifctl --home $(mktemp -d) demo, or IF_BUS_URL=...?namespace=demo")
        return
    from infrafabric.bench._common import clean_namespace

    await clean_namespace(bus, None)


async def _stop(bus: EventBus) -> None:
    # state first, then the message: an agent starting now reads the key, a running one hears it
    await bus.put(STOP, json.dumps({"at": time.time()}))
    await bus.publish(CONTROL, json.dumps({"stop": True}))


class _Orchestrator:
    """Starts the agents, follows the board and their news, kills and restarts one."""

    def __init__(self, bus: EventBus, url: str, coord: IFCoordinator, report: DemoReport,
                 fleet: list[tuple[str, list[str], str, str, str]], caps_of: dict[str, list[str]],
                 kill_one: bool, on_change: Callable[[DemoReport], None], home: str | None = None) -> None:
        self.bus, self.url, self.coord, self.report, self.home = bus, url, coord, report, home
        self.fleet, self.caps_of, self.kill_one, self.on_change = fleet, caps_of, kill_one, on_change
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.left: set[str] = set()
        self.restart_at: float | None = None
        self.stop_sent = False
        self.started = time.perf_counter()

    async def spawn(self, sid: str) -> None:
        args = [sys.executable, "-m", "infrafabric.demo.agent", self.url, sid, "--lease", str(LEASE)]
        if sid == FLAKY:
            args.append("--flaky")
        if sid == BLOCKED_SWARM:
            args += ["--blocker", BLOCKER_TASK]
        if self.home is not None:
            args += ["--home", self.home]
        self.procs[sid] = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL)
        self.report.views[sid].pid = self.procs[sid].pid
        self.left.discard(sid)

    def _others_can_do(self, task_id: str, sid: str) -> bool:
        caps = self.caps_of.get(task_id, [])
        return any(coverage(caps, offered) >= 0.7 for other, offered, *_ in self.fleet
                   if other not in (sid, FLAKY))

    async def run(self, deadline: float) -> None:
        inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def pump(kind: str, stream: Any) -> None:
            async for item in stream:
                await inbox.put((kind, item))

        async with self.coord.events() as events, self.bus.subscribe(PROGRESS) as news:
            pumps = [asyncio.create_task(pump("event", events)), asyncio.create_task(pump("news", news))]
            try:
                # flaky-agent starts alone, until its breaker opens: on a loaded machine the others
                # could otherwise take every task it covers before it failed three times
                later = [sid for sid in self.report.swarms if sid != FLAKY]
                first = [FLAKY] if FLAKY in self.report.swarms else later
                later = later if first == [FLAKY] else []
                for sid in first:
                    await self.spawn(sid)
                head_start = time.monotonic() + HEAD_START_S
                until = time.monotonic() + deadline
                while len(self.left) < len(self.procs) + len(later) and time.monotonic() < until:
                    flaky = self.report.views.get(FLAKY)
                    if later and (flaky is None or flaky.state == "breaker OPEN" or FLAKY in self.left
                                  or time.monotonic() >= head_start):
                        for sid in later:
                            await self.spawn(sid)
                        later = []
                    await self._maybe_restart()
                    try:
                        async with asyncio.timeout(0.25):
                            kind, item = await inbox.get()
                    except TimeoutError:
                        continue
                    if kind == "event":
                        self._on_event(item)
                    else:
                        self._on_news(json.loads(item.data))
                    await self._maybe_stop()
                    self.on_change(self.report)
                if not self.stop_sent:
                    await _stop(self.bus)
            finally:
                for task in pumps:
                    task.cancel()
                await self._reap()

    async def _maybe_restart(self) -> None:
        victim = self.report.killed
        if self.restart_at is not None and time.monotonic() >= self.restart_at and victim:
            self.restart_at = None
            await self.spawn(victim)
            self.report.log.append(f"{victim} restarted as pid {self.procs[victim].pid}")

    async def _maybe_stop(self) -> None:
        if self.report.completed >= self.report.tasks and not self.stop_sent and self.restart_at is None:
            await _stop(self.bus)
            self.stop_sent = True
            self.report.log.append(f"board done in {time.perf_counter() - self.started:.1f} s; "
                                   "agents told to stop")

    def _on_event(self, ev: TaskEvent) -> None:
        report = self.report
        if ev.status is TaskStatus.COMPLETED:
            report.completed += 1
            if ev.task_id == report.killed_task:
                report.reclaimed_by = ev.owner or ev.by
                report.log.append(f"{ev.task_id} reclaimed and completed by {report.reclaimed_by}")
        elif "lapsed" in ev.reason:
            report.log.append(f"{ev.task_id}: lease lapsed ({ev.reason}); pushed again")

    def _on_news(self, n: dict[str, Any]) -> None:
        report, agent, kind = self.report, n["agent"], n["event"]
        view = report.views[agent]
        if kind == "ready":
            view.state = "idle"
        elif kind == "claimed":
            view.state, view.task = "working", n["task"]
            if (self.kill_one and report.killed is None and agent not in (FLAKY, BLOCKED_SWARM)
                    and self._others_can_do(n["task"], agent)):
                self.procs[agent].send_signal(signal.SIGKILL)
                report.killed, report.killed_task, view.state = agent, n["task"], "killed -9"
                self.left.add(agent)
                self.restart_at = time.monotonic() + LEASE + 1.5
                report.log.append(f"kill -9 {agent} while it holds {n['task']}; "
                                  f"its lease lapses in {LEASE:g} s")
        elif kind == "completed":
            view.state, view.task, view.done = "idle", "", view.done + 1
        elif kind == "failed":
            view.failed += 1
            view.state = f"failed ({n['limit']})"
            report.log.append(f"{agent}: {n['task']} stopped by the sandbox (out of {n['limit']}); "
                              f"breaker {n['breaker']}")
        elif kind == "breaker_open":
            view.state = "breaker OPEN"
        elif kind == "blocked":
            report.blocker_helpers = n["helpers"]
            report.log.append(f"{agent} blocked on {n['task']}: helpers "
                              f"{', '.join(n['helpers']) or 'none (escalated)'}")
        elif kind == "left":
            self.left.add(agent)
            if view.state != "killed -9":
                view.state = "stopped"
            report.claims_refused += n["lost"]
            report.claim_ms += n["claim_ms"]
            report.push_ms += n["push_ms"]
            report.wasted_micros += n["wasted_micros"]

    async def _reap(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                try:
                    async with asyncio.timeout(10):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def run_demo(bus: EventBus, url: str, *, tasks: int | None = None, swarms: int = 6,
                   kill_one: bool = True, deadline: float = 85.0, home: str | None = None,
                   on_change: Callable[[DemoReport], None] = lambda _: None) -> DemoReport:
    """Run the demo on ``bus`` (reachable at ``url`` for the agent processes;
    ``home``: the state directory, whose witness key signs checkpoints)."""
    started = time.perf_counter()
    await _prepare(bus)
    await bus.put(MARKER, json.dumps({"started_at": time.time()}))
    # flaky-agent burns three attempts of a task before its breaker opens; others must still get it
    assembled = assemble(bus, home=home, actor="orchestrator", lease_ttl=LEASE, max_attempts=6)
    coord, gov, audit = assembled.coordinator, assembled.governor, assembled.witness
    # the 3-hour wasm runtime task costs $12 at session-7's $4/h: the cap allows it (claims are
    # refused above max_cost_per_task, and hold their estimate against the budget while they last)
    await gov.set_policy(ResourcePolicy(max_swarms_per_task=2, circuit_breaker_failure_threshold=3,
                                        max_cost_per_task_micros=usd("15")), by="demo")
    fleet = [*SESSIONS[:max(1, min(swarms, len(SESSIONS) - 1))], SESSIONS[-1]]
    for sid, caps, rate, model, budget in fleet:
        await gov.register_swarm(SwarmProfile(id=sid, capabilities=caps, cost_per_hour_micros=usd(rate),
                                              model=model), budget_micros=usd(budget))
    specs = [s for s in seed_board(tasks)
             if any(coverage(s["capabilities"], offered) >= 0.7 for _, offered, *_ in fleet)]
    known = {s["id"] for s in specs}
    specs = [s for s in specs if set(s["dependencies"]) <= known]
    await coord.create_tasks(specs)
    report = DemoReport(url, len(specs), [f[0] for f in fleet])
    report.views = {sid: AgentView(sid) for sid in report.swarms}
    report.log.append(f"imported the seed board: {len(specs)} tasks; {len(fleet)} swarms registered")
    async with coord:
        await _Orchestrator(bus, url, coord, report, fleet, {s["id"]: s["capabilities"] for s in specs},
                            kill_one, on_change, home).run(deadline)
    board = await coord.list_tasks()
    report.completed = sum(t.status is TaskStatus.COMPLETED for t in board)
    report.claims_won = sum(h.to is TaskStatus.CLAIMED for t in board for h in t.history)
    report.exactly_once = all(sum(h.to is TaskStatus.COMPLETED for h in t.history) <= 1 for t in board)
    report.spend = {sid: b.spent_micros for sid, b in sorted((await gov.budgets()).items())}
    report.breakers_open = sorted([sid for sid in report.swarms
                                   if (await gov.breaker(sid)).state is BreakerState.OPEN])
    verified = await audit.verify()
    report.witness_entries, report.witness_ok = verified.entries, verified.ok
    report.seconds = time.perf_counter() - started
    on_change(report)
    return report


def dollars(micros: int) -> str:
    return f"${Decimal(micros) / MICROS:,.2f}"
