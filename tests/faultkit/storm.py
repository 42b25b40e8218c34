"""A fault storm: agent processes work a board on a local cluster while nodes
and agents are killed, paused and restarted; the recorded history is then
checked against what the bus holds (:mod:`faultkit.checker`).

Two halves:

* the **agent** (``python -m faultkit.storm agent URL SWARM HISTORY_DIR``)
  loops: claim the best task with :meth:`IFCoordinator.next_task` (every
  compare-and-swap it makes is recorded), hold it with heartbeats (recorded),
  debit a small cost and append a witness entry (recorded), complete it
  (recorded, retried while its outcome is unknown). A bus error is recorded as
  an unknown outcome; the agent backs off briefly and carries on. It exits when
  every task is completed, or when the stop key is set (checked when idle);
* :func:`run_storm` creates the board, registers the swarms and their budgets,
  starts the agents, injects the requested :data:`FAULTS` one after another
  while they work, waits (bounded) until every task is completed, stops the
  agents, checks the history and returns a :class:`StormReport` with the
  verdict, the fault timeline and how long the agents stalled around each fault.

Faults (each ``async def fault(cluster, pool) -> detail``): ``kill_leader``,
``kill_follower`` (SIGKILL, restart from disk a few seconds later),
``pause_node`` / ``pause_leader`` (SIGSTOP a follower / the leader past the lease
TTL, then SIGCONT), ``kill_agent`` (SIGKILL an agent holding a task, start a
replacement; the task must be reclaimed once its lease lapses),
``partition_node`` (blackhole the agents' traffic to the node most of them
are connected to past the lease TTL, then cut those connections: every node
is reached by the agents only through its own
:class:`~faultkit.proxy.TcpProxy`), ``restart_all`` (stop every
node, start them all again from disk).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from faultkit.checker import CheckReport, check, read_final_state
from faultkit.history import (
    History,
    HistoryRecorder,
    load_history,
    record_claim,
    recorded_append,
    recorded_complete,
    recorded_debit,
)
from faultkit.proxy import TcpProxy
from infrafabric.bench.cluster import LocalCluster
from infrafabric.bus import EventBus, connect
from infrafabric.coordinator import ClaimOutcome, IFCoordinator, TaskStatus
from infrafabric.errors import InfraFabricError, NotOwnerError
from infrafabric.fleet import assemble
from infrafabric.governor.core import IFGovernor
from infrafabric.witness.log import Witness

__all__ = [
    "FAULTS",
    "MORE_KEY",
    "STOP_KEY",
    "AgentPool",
    "FaultEvent",
    "NodeProxy",
    "RecordedCoordinator",
    "StormReport",
    "agent_main",
    "agent_stalls",
    "run_storm",
    "stalls",
]

#: the folder this package is imported from (the tests' root; the package is not installed)
HOME = Path(__file__).resolve().parent.parent
#: set on the bus (in the run's namespace) to tell idle agents to exit
STOP_KEY = "faults/storm/stop"
#: while set, a board with every task completed is not done: more tasks are coming
MORE_KEY = "faults/storm/more"
#: the bus timeout of the agents (seconds): a call to a dead node gives up soon
AGENT_TIMEOUT = 2.0
#: a generous per-task attempt limit: leases lapse often in a storm
MAX_ATTEMPTS = 1000
#: how long a killed node stays down before it is restarted (seconds; ``run_storm(down=)``)
DOWN = 3.0


# -- the agent ---------------------------------------------------------------------------


class RecordedCoordinator(IFCoordinator):
    """A coordinator whose every claim (also those :meth:`next_task` makes)
    and heartbeat (also those :meth:`holding` sends) is recorded."""

    def __init__(self, bus: EventBus, recorder: HistoryRecorder, **kwargs: Any) -> None:
        super().__init__(bus, **kwargs)
        self.recorder = recorder

    async def try_claim(self, swarm_id: str, task_id: str, *, lease_ttl: float | None = None,
                        dry_run: bool = False) -> ClaimOutcome:
        if dry_run:
            return await super().try_claim(swarm_id, task_id, lease_ttl=lease_ttl, dry_run=True)
        return await record_claim(self.recorder, swarm_id, task_id,
                                  lambda: super(RecordedCoordinator, self).try_claim(swarm_id, task_id,
                                                                                     lease_ttl=lease_ttl))

    async def heartbeat(self, swarm_id: str, task_id: str, claim_id: str | None = None, *,
                        lease_ttl: float | None = None, note: str | None = None) -> float:
        with self.recorder.begin("heartbeat", swarm=swarm_id, task=task_id, claim_id=claim_id):
            return await super().heartbeat(swarm_id, task_id, claim_id, lease_ttl=lease_ttl, note=note)


def _log(swarm: str, message: str) -> None:
    print(f"{time.time():.3f} {swarm}: {message}", file=sys.stderr, flush=True)


async def _connect(url: str, swarm: str, deadline: float) -> EventBus:
    delay = 0.1
    while True:
        try:
            return await connect(url)
        except InfraFabricError as exc:
            if time.monotonic() > deadline:
                raise
            _log(swarm, f"connect failed ({exc}); retrying")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def agent_main(url: str, swarm: str, history_dir: str | os.PathLike[str], *, lease: float = 3.0,
                     work: tuple[float, float] = (0.5, 1.5), seed: int | None = None,
                     fsync: bool = True, max_runtime: float = 600.0) -> int:
    """Work the board at ``url`` as ``swarm`` until every task is completed or
    :data:`STOP_KEY` is set; returns how many tasks this agent completed."""
    rng = random.Random(seed)
    deadline = time.monotonic() + max_runtime
    bus = await _connect(url, swarm, deadline)
    done = 0
    try:
        with HistoryRecorder(history_dir, swarm, fsync=fsync) as rec:
            fleet = assemble(bus, actor=swarm, lease_ttl=lease, max_attempts=MAX_ATTEMPTS, signer=None,
                             coordinator_factory=functools.partial(RecordedCoordinator, recorder=rec))
            coord, gov, witness = fleet.coordinator, fleet.governor, fleet.witness
            errors = 0
            while time.monotonic() < deadline:
                try:
                    outcome = await coord.next_task(swarm, wait=0)
                    if outcome is None:
                        if await bus.get(STOP_KEY) is not None:
                            _log(swarm, "stop key set; exiting")
                            break
                        tasks = await coord.list_tasks()
                        if tasks and all(t.status is TaskStatus.COMPLETED for t in tasks) \
                                and await bus.get(MORE_KEY) is None:
                            _log(swarm, "board done; exiting")
                            break
                        await asyncio.sleep(0.1 + rng.random() * 0.1)
                        continue
                    errors = 0
                    if await _work(rec, coord, gov, witness, swarm, outcome, rng, work):
                        done += 1
                except InfraFabricError as exc:  # bus trouble: recorded as unknown by the wrappers
                    errors += 1
                    _log(swarm, f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(min(0.1 * 2 ** min(errors, 4), 1.0) * (0.5 + rng.random()))
    finally:
        with contextlib.suppress(Exception):
            await bus.close()
    _log(swarm, f"completed {done} task(s)")
    return done


async def _work(rec: HistoryRecorder, coord: IFCoordinator, gov: IFGovernor, witness: Witness, swarm: str,
                outcome: ClaimOutcome, rng: random.Random, work: tuple[float, float]) -> bool:
    """Hold the claimed task, pay for it, witness it and complete it; True if
    the completion was acknowledged."""
    task_id, cid = outcome.task_id, outcome.claim_id
    async with coord.holding(swarm, task_id, cid) as lost:
        await asyncio.sleep(rng.uniform(*work) / 2)
        await recorded_debit(rec, gov, swarm, "work", rng.randint(1, 10_000), task=task_id)
        await recorded_append(rec, witness, "agent", "worked", {"task": task_id}, actor=swarm)
        await asyncio.sleep(rng.uniform(*work) / 2)
        if lost.is_set():
            _log(swarm, f"lost the claim on {task_id}")
            return False
        delay = 0.1
        for _attempt in range(20):
            try:
                await recorded_complete(rec, coord, swarm, task_id, cid, swarm)
                return True
            except NotOwnerError as exc:  # lost it, or an earlier unknown attempt did land
                _log(swarm, f"complete {task_id}: {exc}")
                return False
            except InfraFabricError as exc:  # unknown: try again under the same claim
                _log(swarm, f"complete {task_id} unknown ({type(exc).__name__}); retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
    return False


# -- agent processes ---------------------------------------------------------------------


class NodeProxy(TcpProxy):
    """A :class:`TcpProxy` in front of one node that counts its open connections."""

    def __init__(self, node: int, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self.node = node
        #: client connections open through this proxy now
        self.open = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            await super()._accept(reader, writer)
        finally:
            self.open -= 1


def agent_env() -> dict[str, str]:
    """The environment of an agent process: this one's, with the folder that holds
    this package (``tests/``, not installed) first on ``PYTHONPATH`` so that
    ``python -m faultkit.storm`` finds it from any working directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOME), env.get("PYTHONPATH")) if p)
    return env


@dataclass
class Agent:
    swarm: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float
    killed: bool = False


class AgentPool:
    """The agent processes of a run (and the spare swarm ids for replacements)."""

    def __init__(self, url: str, directory: Path, *, lease: float, work: tuple[float, float],
                 spares: list[str], fsync: bool = True, down: float = DOWN) -> None:
        self.url = url
        self.directory = directory
        self.history_dir = directory / "history"
        self.lease = lease
        self.work = work
        self.spares = list(spares)
        self.fsync = fsync
        #: how long a killed node stays down before it is restarted
        self.down = down
        self.agents: list[Agent] = []
        #: one proxy per node between the agents and that node (for ``partition_node``)
        self.proxies: list[NodeProxy] = []
        #: the run's URL straight to the nodes (the storm's own calls: never partitioned)
        self.control_url = url

    def start(self, swarm: str) -> Agent:
        log_path = self.directory / f"{swarm}.log"
        cmd = [sys.executable, "-m", "faultkit.storm", "agent", self.url, swarm,
               str(self.history_dir), "--lease", str(self.lease), "--work", str(self.work[0]),
               str(self.work[1]), "--seed", str(len(self.agents))]
        if not self.fsync:
            cmd.append("--no-fsync")
        with log_path.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=agent_env())
        agent = Agent(swarm, proc, log_path, time.time())
        self.agents.append(agent)
        return agent

    def replacement(self) -> Agent:
        if not self.spares:
            raise InfraFabricError("no spare swarm left for a replacement agent")
        return self.start(self.spares.pop(0))

    def live(self) -> list[Agent]:
        return [a for a in self.agents if a.proc.poll() is None]

    def kill(self, agent: Agent) -> None:
        with contextlib.suppress(ProcessLookupError):
            agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait()
        agent.killed = True

    async def wait(self, within: float) -> bool:
        """Wait until every agent has exited; False if some still run after ``within`` seconds."""
        end = time.monotonic() + within
        while self.live():
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.1)
        return True

    def kill_all(self) -> None:
        for agent in self.live():
            self.kill(agent)

    def tail(self, agent: Agent, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(agent.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


# -- faults ------------------------------------------------------------------------------

Fault = Callable[[LocalCluster[Any], AgentPool], Awaitable[dict[str, JsonValue]]]


async def _restart(cluster: LocalCluster[Any], index: int) -> None:
    await asyncio.to_thread(cluster.restart, index)


async def kill_leader(cluster: LocalCluster[Any], pool: AgentPool) -> dict[str, JsonValue]:
    """SIGKILL the node that leads; restart it from disk after ``pool.down`` seconds."""
    index = await cluster.leader()
    cluster.kill(index)
    await asyncio.sleep(pool.down)
    await _restart(cluster, index)
    return {"node": index}


async def kill_follower(cluster: LocalCluster[Any], pool: AgentPool) -> dict[str, JsonValue]:
    """SIGKILL a node that does not lead; restart it after ``pool.down`` seconds."""
    leader = await cluster.leader()
    index = next(i for i in cluster.live() if i != leader)
    cluster.kill(index)
    await asyncio.sleep(pool.down)
    await _restart(cluster, index)
    return {"node": index, "leader": leader}


async def _pause(cluster: LocalCluster[Any], pool: AgentPool, index: int) -> dict[str, JsonValue]:
    held = pool.lease + 1.0
    cluster.pause(index)
    try:
        await asyncio.sleep(held)
    finally:
        cluster.resume(index)
    return {"node": index, "held": held}


async def pause_node(cluster: LocalCluster[Any], pool: AgentPool) -> dict[str, JsonValue]:
    """SIGSTOP a follower for longer than the lease TTL, then SIGCONT it."""
    leader = await cluster.leader()
    index = next(i for i in cluster.live() if i != leader)
    return await _pause(cluster, pool, index)


async def pause_leader(cluster: LocalCluster[Any], pool: AgentPool) -> dict[str, JsonValue]:
    """SIGSTOP the leader for longer than the lease TTL, then SIGCONT it."""
    return await _pause(cluster, pool, await cluster.leader())


async def kill_agent(cluster: LocalCluster[Any], pool: AgentPool) -> dict[str, JsonValue]:
    """SIGKILL an agent that holds a task, start a replacement, and wait
    (bounded) until that task is claimed by someone else."""
    live = {a.swarm: a for a in pool.live()}
    async with connect(pool.control_url) as bus:
        coord = IFCoordinator(bus)
        victim, task_id = None, None
        end = time.monotonic() + 10
        while victim is None and time.monotonic() < end:
            with contextlib.suppress(InfraFabricError):
                for t in await coord.list_tasks():
                    if t.status is TaskStatus.CLAIMED and t.owner in live:
                        victim, task_id = live[t.owner], t.id
                        break
            if victim is None:
                await asyncio.sleep(0.05)
        if victim is None:
            victim = next(iter(live.values()))
        pool.kill(victim)
        killed_at = time.time()
        spare = pool.replacement()
        detail: dict[str, JsonValue] = {"agent": victim.swarm, "task": task_id, "replacement": spare.swarm}
        if task_id is None:
            return detail
        end = time.monotonic() + pool.lease * 4 + 10
        while time.monotonic() < end:
            with contextlib.suppress(InfraFabricError):
                t = await coord.get_task(task_id)
                taken = [h for h in t.history if h.at > killed_at and h.by not in (None, victim.swarm)]
                if t.status is TaskStatus.COMPLETED or taken:
                    detail["reclaimed_after"] = round((taken[0].at if taken else time.time()) - killed_at, 3)
                    detail["reclaimed_by"] = taken[0].by if taken else None
                    return detail
            await asyncio.sleep(0.1)
        detail["reclaimed_after"] = None
        return detail


async def partition_node(cluster: LocalCluster[Any], pool: AgentPool) -> dict[str, JsonValue]:
    """Partition the agents from the node most of their connections go to
    (through its :class:`NodeProxy`): blackhole that traffic both ways past
    the lease TTL, then heal by cutting those connections (their streams lost
    bytes; a real TCP connection would have timed out) so the clients
    reconnect. Reports the node, the connections cut, the bytes blackholed."""
    open_before = {p.node: p.open for p in pool.proxies}
    proxy = _busiest_proxy(pool, "partition_node")
    held = pool.lease + 1.0
    dropped, accepted = proxy.dropped, proxy.accepted
    connections = proxy.open
    proxy.blackhole()
    try:
        await asyncio.sleep(held)
    finally:
        proxy.forward()
        proxy.reset()
    return {"node": proxy.node, "held": held, "connections_cut": connections,
            "connections_during": proxy.accepted - accepted, "dropped_bytes": proxy.dropped - dropped,
            "open_by_node": {str(k): v for k, v in open_before.items()}}


def _busiest_proxy(pool: AgentPool, fault: str) -> Any:
    if not pool.proxies:
        raise InfraFabricError(f"{fault} needs the run's node proxies (run_storm makes them)")
    proxy = max(pool.proxies, key=lambda p: (p.open, -p.node))
    if proxy.open == 0:
        raise InfraFabricError(f"no agent is connected through any node proxy "
                               f"({ {p.node: p.open for p in pool.proxies} })")
    return proxy


async def delay_node(cluster: LocalCluster[Any], pool: AgentPool) -> dict[str, JsonValue]:
    """Slow the agents' busiest node down: every chunk either way is held
    :data:`DELAY_S` (a congested link) for a lease TTL and a second, then the
    link is normal again. Nothing is lost; calls near their deadline time out."""
    proxy = _busiest_proxy(pool, "delay_node")
    held = pool.lease + 1.0
    connections = proxy.open
    proxy.delay(DELAY_S)
    try:
        await asyncio.sleep(held)
    finally:
        proxy.forward()
    return {"node": proxy.node, "held": held, "delay_s": DELAY_S, "connections": connections}


async def restart_all(cluster: LocalCluster[Any], pool: AgentPool) -> dict[str, JsonValue]:
    """Stop every node (SIGTERM), then start them all again from their data directories
    (after a second, or ``pool.down`` if that is shorter)."""
    t0 = time.monotonic()
    await asyncio.to_thread(cluster.stop)
    await asyncio.sleep(min(1.0, pool.down))
    await asyncio.to_thread(cluster.start)
    return {"down_for": round(time.monotonic() - t0, 3)}


FAULTS: dict[str, Fault] = {
    "kill_leader": kill_leader,
    "kill_follower": kill_follower,
    "pause_node": pause_node,
    "pause_leader": pause_leader,
    "kill_agent": kill_agent,
    "restart_all": restart_all,
    "partition_node": partition_node,
    "delay_node": delay_node,
}
#: how long :func:`delay_node` holds every chunk of the slowed node's traffic
DELAY_S = 0.4


# -- the run -----------------------------------------------------------------------------


@dataclass
class FaultEvent:
    """One injected fault: when it began and was healed (``time.time()``)."""

    name: str
    start: float
    end: float
    detail: dict[str, JsonValue] = field(default_factory=dict)
    #: tasks completed when it began (a fault on an idle board proves little)
    completed_before: int = 0
    #: the longest gap between consecutive acknowledged operations (all agents) overlapping it
    stall: float | None = None
    #: the same, per agent process (the agents it cut off show the longest)
    agent_stalls: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, JsonValue]:
        return {"name": self.name, "start": self.start, "end": self.end,
                "duration": round(self.end - self.start, 3), "detail": self.detail,
                "completed_before": self.completed_before,
                "stall": None if self.stall is None else round(self.stall, 3),
                "agent_stalls": {k: round(v, 3) for k, v in self.agent_stalls.items()}, "error": self.error}


@dataclass
class StormReport:
    """The verdict of one storm."""

    engine: str
    check: CheckReport
    faults: list[FaultEvent]
    tasks: int
    completed: int
    runtime: float
    ops: dict[str, dict[str, int]]
    #: the longest gap between acknowledged operations outside every fault
    baseline_stall: float | None
    agents: list[str]
    directory: str
    #: the bus URL of the run (its namespace)
    url: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.check.ok and self.completed == self.tasks and not self.problems

    def to_dict(self) -> dict[str, JsonValue]:
        return {"ok": self.ok, "engine": self.engine, "tasks": self.tasks, "completed": self.completed,
                "runtime": round(self.runtime, 3), "ops": {k: dict(v) for k, v in self.ops.items()},
                "checks": {k: dict(v) for k, v in self.check.counts().items()},
                "faults": [f.to_dict() for f in self.faults],
                "baseline_stall": None if self.baseline_stall is None else round(self.baseline_stall, 3),
                "agents": list(self.agents), "directory": self.directory, "url": self.url,
                "problems": list(self.problems),
                "violations": [v.to_dict() for v in self.check.violations],
                "notes": list[JsonValue](self.check.notes)}

    def __str__(self) -> str:
        lines = [f"storm on {self.engine}: {'ok' if self.ok else 'FAILED'} — {self.completed}/{self.tasks} "
                 f"tasks in {self.runtime:.1f} s, agents {', '.join(self.agents)}"]
        for f in self.faults:
            stall = "?" if f.stall is None else f"{f.stall:.2f} s"
            worst = max(f.agent_stalls.values(), default=None)
            lines.append(f"  fault {f.name} {json.dumps(f.detail)}: {f.end - f.start:.1f} s, "
                         f"longest stall {stall}"
                         + ("" if worst is None else f" (one agent: {worst:.2f} s)")
                         + f", {f.completed_before} done before"
                         + (f", ERROR {f.error}" if f.error else ""))
        base = "?" if self.baseline_stall is None else f"{self.baseline_stall:.2f} s"
        lines.append(f"  longest gap outside faults: {base}")
        lines.append(f"  ops: {json.dumps(self.ops)}")
        lines.extend(f"  problem: {p}" for p in self.problems)
        lines.append(str(self.check))
        return "\n".join(lines)


def stalls(history: History,
           windows: Sequence[tuple[float, float]]) -> tuple[list[float | None], float | None]:
    """For each ``(start, end)`` window, the longest gap between consecutive
    acknowledged operations (by their end time, across every process) that
    overlaps it; and the longest gap overlapping none of them."""
    ends = sorted(o.end for o in history.ops if o.acknowledged and o.end is not None)
    gaps = list(itertools.pairwise(ends))
    per: list[float | None] = []
    for start, end in windows:
        inside = [b - a for a, b in gaps if b >= start and a <= end]
        per.append(max(inside) if inside else None)
    outside = [b - a for a, b in gaps if all(b < s or a > e for s, e in windows)]
    return per, (max(outside) if outside else None)


def agent_stalls(history: History, start: float, end: float) -> dict[str, float]:
    """Per agent process, the longest gap between its consecutive acknowledged
    operations that overlaps the window ``(start, end)``: how long the fault
    kept that agent from getting anything done."""
    by: dict[str, list[float]] = {}
    for o in history.ops:
        if o.acknowledged and o.end is not None:
            by.setdefault(o.process, []).append(o.end)
    out: dict[str, float] = {}
    for process, ends in sorted(by.items()):
        inside = [b - a for a, b in itertools.pairwise(sorted(ends)) if b >= start and a <= end]
        if inside:
            out[process] = max(inside)
    return out


def _with_options(url: str, **options: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in options.items())


async def _progress(coord: IFCoordinator) -> tuple[int, int] | None:
    """(tasks completed, tasks on the board), None if the bus does not answer."""
    with contextlib.suppress(InfraFabricError):
        board = await coord.list_tasks()
        return sum(t.status is TaskStatus.COMPLETED for t in board), len(board)
    return None


def _specs(start: int, count: int, chain: int) -> list[dict[str, Any]]:
    return [{"id": f"T{i:03d}", "title": f"storm task {i}",
             "dependencies": [f"T{i - 1:03d}"] if (i - start) % chain else []}
            for i in range(start, start + count)]


async def run_storm(cluster: LocalCluster[Any], faults: Sequence[str], *, tasks: int = 40, agents: int = 3,
                    lease: float = 3.0, work: tuple[float, float] = (0.5, 1.5), chain: int = 5,
                    settle: float = 1.0, backlog: int | None = None, limit: float = 180.0,
                    directory: str | os.PathLike[str] | None = None, namespace: str | None = None,
                    fsync: bool = True, down: float = DOWN) -> StormReport:
    """Run one storm on ``cluster`` (started, ready) and check it.

    The board starts with ``tasks`` tasks in chains of ``chain`` (each depends
    on the one before), worked by ``agents`` agent processes. ``faults`` (names
    in :data:`FAULTS`) are injected in order, each once a task has been
    completed since the last one and ``settle`` seconds have passed; before
    each, the board is topped up with new chains so that at least ``backlog``
    tasks (default three per agent) are still open: every fault hits agents
    at work. Everything is bounded by ``limit`` seconds. A killed node stays
    down ``down`` seconds; a pause, partition or delay lasts the lease and a second.
    """
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise InfraFabricError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    t0 = time.monotonic()
    deadline = t0 + limit
    backlog = 3 * agents if backlog is None else backlog
    workdir = Path(directory or tempfile.mkdtemp(prefix="if-storm-"))
    os.makedirs(workdir, exist_ok=True)
    ns = namespace or "storm" + secrets.token_hex(4)
    proxies: list[NodeProxy] = []
    base = cluster.url
    control_url = _with_options(base, namespace=ns, timeout=f"{AGENT_TIMEOUT:g}")
    if {"partition_node", "delay_node"} & set(faults):  # agents reach every node only through its proxy
        for index, node in enumerate(cluster.nodes):
            proxy = await NodeProxy(index, node.host, node.port).start()
            proxies.append(proxy)
            base = base.replace(f"{node.host}:{node.port}", f"{proxy.host}:{proxy.port}", 1)
    url = _with_options(base, namespace=ns, timeout=f"{AGENT_TIMEOUT:g}")
    swarms = [f"agent-{i}" for i in range(agents)]
    spares = [f"spare-{i}" for i in range(sum(f == "kill_agent" for f in faults) + 1)]
    pool = AgentPool(url, workdir, lease=lease, work=work, spares=spares, fsync=fsync, down=down)
    pool.proxies, pool.control_url = proxies, control_url
    events: list[FaultEvent] = []
    problems: list[str] = []
    created = tasks
    async with connect(control_url) as bus:
        setup = assemble(bus, actor="storm", max_attempts=MAX_ATTEMPTS, signer=None)
        coord, gov = setup.coordinator, setup.governor
        for s in [*swarms, *spares]:
            await coord.register_swarm(s)
            await gov.set_budget(s, 10**12)
        await bus.put(MORE_KEY, "1")
        await coord.create_tasks(_specs(0, tasks, chain))
        try:
            for s in swarms:
                pool.start(s)
            done = 0
            for name in faults:
                # let the agents make progress, and keep work on the board
                want, end = done + 1, time.monotonic() + settle
                while time.monotonic() < deadline:
                    got = await _progress(coord)
                    if got is not None:
                        done, created = got
                        if created - done < backlog:
                            more = -(-(backlog - (created - done)) // chain) * chain
                            with contextlib.suppress(InfraFabricError):
                                await coord.create_tasks(_specs(created, more, chain))
                                created += more
                        if done >= want and time.monotonic() >= end:
                            break
                    await asyncio.sleep(0.1)
                event = FaultEvent(name, time.time(), 0.0, completed_before=done)
                try:
                    event.detail = await asyncio.wait_for(FAULTS[name](cluster, pool),
                                                          max(deadline - time.monotonic(), 1.0))
                except Exception as exc:  # a fault that could not be injected or healed
                    event.error = f"{type(exc).__name__}: {exc!r}"
                    problems.append(f"fault {name}: {event.error}")
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(cluster.start)
                event.end = time.time()
                events.append(event)
            while time.monotonic() < deadline:  # no more tasks will come: let the board drain
                with contextlib.suppress(InfraFabricError):
                    await bus.delete(MORE_KEY)
                    break
                await asyncio.sleep(0.2)
            while time.monotonic() < deadline:
                got = await _progress(coord)
                if got is not None:
                    done, created = got
                    if done >= created or not pool.live():
                        break
                await asyncio.sleep(0.2)
            with contextlib.suppress(InfraFabricError):
                await bus.put(STOP_KEY, "stop")
            if not await pool.wait(max(min(15.0, deadline - time.monotonic()), 5.0)):
                problems.append("agents still running at the end: " + ", ".join(a.swarm for a in pool.live()))
        finally:
            pool.kill_all()
            for proxy in proxies:
                proxy.forward()
        for a in pool.agents:
            if not a.killed and a.proc.returncode != 0:
                problems.append(f"agent {a.swarm} exited with {a.proc.returncode}:\n{pool.tail(a)}")
        history = load_history(pool.history_dir)
        final = await read_final_state(bus, lease_ttl=lease)
    for proxy in proxies:
        await proxy.close()
    report = check(history, final)
    total = len(final.tasks)
    completed = sum(t.status is TaskStatus.COMPLETED for t in final.tasks.values())
    if completed < total:
        problems.append(f"only {completed} of {total} tasks completed within {limit:g} s")
    for e in events:
        if e.completed_before >= created:
            problems.append(f"fault {e.name} was injected after the board was done")
    per, baseline = stalls(history, [(e.start, e.end) for e in events])
    for event, stall in zip(events, per, strict=True):
        event.stall = stall
        event.agent_stalls = agent_stalls(history, event.start, event.end)
    storm = StormReport(engine=cluster.kind, check=report, faults=events, tasks=total, completed=completed,
                        runtime=time.monotonic() - t0, ops=history.counts(), baseline_stall=baseline,
                        agents=[a.swarm for a in pool.agents], directory=str(workdir), url=control_url,
                        problems=problems)
    (workdir / "report.json").write_text(json.dumps(storm.to_dict(), indent=2, default=str))
    return storm


# -- command line ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faultkit.storm")
    sub = parser.add_subparsers(dest="command", required=True)
    ag = sub.add_parser("agent", help="one agent process of a storm")
    ag.add_argument("url")
    ag.add_argument("swarm")
    ag.add_argument("history_dir")
    ag.add_argument("--lease", type=float, default=3.0)
    ag.add_argument("--work", type=float, nargs=2, default=(0.5, 1.5), metavar=("MIN", "MAX"))
    ag.add_argument("--seed", type=int, default=None)
    ag.add_argument("--no-fsync", action="store_true")
    ag.add_argument("--max-runtime", type=float, default=600.0)
    args = parser.parse_args(argv)
    asyncio.run(agent_main(args.url, args.swarm, args.history_dir, lease=args.lease,
                           work=(args.work[0], args.work[1]), seed=args.seed, fsync=not args.no_fsync,
                           max_runtime=args.max_runtime))
    return 0


if __name__ == "__main__":
    sys.exit(main())
