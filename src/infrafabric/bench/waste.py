"""``ifctl bench waste``: how much spend is wasted when work goes to the
wrong swarm, with random assignment and with the governor, in one run.

The model (also in ``docs/waste-model.md``), all drawn from
``random.Random(seed)``, money in integer micro-dollars (never floats):

* **capabilities**: the pool is :data:`~infrafabric.governor.models.BUILTIN_CAPABILITIES`
  (sorted, so a seed means the same workload everywhere).
* **swarms** (``--swarms``): 2-5 declared capabilities from the pool, a cost
  per hour of $0.50-$5.00 (in steps of one cent), and a **hidden skill** per
  capability — the probability that the swarm does work needing it right:
  0.970-0.999 on the capabilities it declares, 0.10-0.30 on every other one.
  Why 0.97: a swarm declares what it can do to its SLO, and the default SLO
  (:class:`~infrafabric.chassis.models.ServiceLevelObjective`) asks for 95 %
  of tasks done right — a 3-capability task at 0.97 each just meets it.
  Every swarm starts with reputation 1 (the seeds' benefit of the doubt);
  the governor never sees the skill, only outcomes.
* **tasks** (``--tasks``): 1-3 required capabilities, drawn from the declared
  capabilities of a random swarm (work the fleet was assembled for, so some
  swarm always declares all of it), and an estimate of 0.5-8 h in half hours.
* **an attempt** of a task by a swarm costs estimate x the swarm's cost per
  hour (exact: integer micro-dollars) and succeeds with probability = the
  product of the swarm's hidden skill over the task's required capabilities.
  A failed attempt is redone by the same strategy, up to
  :data:`MAX_ATTEMPTS` attempts; a task that fails them all is abandoned.
* **random** assignment gives each attempt to a uniformly random swarm.
* **governor** assignment registers the swarms (profile and a budget too
  large to trip) with a real :class:`~infrafabric.governor.IFGovernor` on the
  bus, in a fresh namespace, and gives each attempt to
  ``find_qualified_swarm(required)``; when none qualifies it falls back to
  the best ``explain_match`` candidate (counted as ``fallbacks``). Every
  attempt is debited with ``track_cost``, and its outcome feeds the swarm's
  reputation (the seeds' formula: success rate, x0.8 below the SLO's 95 %),
  written with ``set_reputation`` — what the chassis's SLO tracking does —
  so matching learns which swarms deliver.
* **floor**: each attempt goes to the qualified swarm with the best hidden
  skill — an oracle no real governor has; the waste no assignment can avoid.
* **waste** = spend on attempts that failed (and had to be redone or were
  abandoned) + spend on attempts by a swarm whose coverage of the task is
  below 0.7 (the policy's ``min_capability_match``), each attempt counted
  once, ÷ total spend.

Each strategy draws its outcomes (and random its choices) from its own
generator seeded from the seed, so a seed gives identical figures on every
run and backend. Targets: governor waste ≤ 5 %, random waste ≥ 40 %; they
are reported with ``pass`` and ``applies``, never asserted.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from infrafabric.bench._common import (
    BenchError,
    Progress,
    clean_namespace,
    machine_info,
    started_at,
    target_row,
    with_namespace,
)
from infrafabric.bus import connect, parse_url
from infrafabric.coordinator import coverage
from infrafabric.governor import IFGovernor
from infrafabric.governor.models import BUILTIN_CAPABILITIES, MICROS, SwarmProfile, format_usd

__all__ = ["MAX_ATTEMPTS", "PHASES", "STRATEGIES", "TARGETS", "Workload", "bench_waste",
           "make_workload"]

MAX_ATTEMPTS = 5
#: coverage below this makes an attempt unqualified (the default policy's min_capability_match)
QUALIFIED = 0.7
STRATEGIES = ("random", "governor", "floor")
PHASES: dict[str, str] = {"setup": "registering swarms", "random": "random assignment",
                          "governor": "governor assignment", "floor": "oracle floor",
                          "cleanup": "cleaning up"}
#: (id, strategy, compare, threshold, description)
TARGETS: list[tuple[str, str, str, float, str]] = [
    ("governor_waste", "governor", "<=", 0.05, "governor waste <= 5 % of spend"),
    ("random_waste", "random", ">=", 0.40, "random waste >= 40 % of spend (the baseline)"),
]
#: budget per swarm: far above anything a run can spend, so no breaker trips
BUDGET_MICROS = 1_000_000 * MICROS
DECLARED_SKILL = (970, 999)  # per mille
OTHER_SKILL = (100, 300)
#: the default SLO's success rate: below it a swarm's reputation takes the seeds' 20 % penalty
SLO_SUCCESS = Decimal("0.95")
COST_CENTS = (50, 500)  # per hour
ESTIMATE_HALF_HOURS = (1, 16)
PER_MILLE = Decimal(1000)


@dataclass(frozen=True)
class Swarm:
    profile: SwarmProfile
    #: hidden: probability of success per capability (every capability of the pool)
    skill: dict[str, Decimal]


@dataclass(frozen=True)
class WorkTask:
    id: str
    capabilities: list[str]
    estimate_hours: Decimal


@dataclass(frozen=True)
class Workload:
    seed: int
    swarms: list[Swarm]
    tasks: list[WorkTask]


def make_workload(seed: int, tasks: int, swarms: int) -> Workload:
    """The seeded workload (see the module docs)."""
    if tasks < 1 or swarms < 1:
        raise ValueError("tasks and swarms must be at least 1")
    rng = random.Random(seed)
    pool = sorted(BUILTIN_CAPABILITIES)
    fleet: list[Swarm] = []
    for i in range(swarms):
        declared = sorted(rng.sample(pool, rng.randint(2, 5)))
        skill = {cap: Decimal(rng.randint(*(DECLARED_SKILL if cap in declared else OTHER_SKILL)))
                 / PER_MILLE for cap in pool}
        profile = SwarmProfile(id=f"swarm-{i:02d}", capabilities=declared,
                               cost_per_hour_micros=rng.randint(*COST_CENTS) * 10_000)
        fleet.append(Swarm(profile, skill))
    work: list[WorkTask] = []
    for i in range(tasks):
        anchor = rng.choice(fleet).profile.capabilities
        caps = sorted(rng.sample(anchor, rng.randint(1, min(3, len(anchor)))))
        hours = Decimal(rng.randint(*ESTIMATE_HALF_HOURS)) / 2
        work.append(WorkTask(f"task-{i:04d}", caps, hours))
    return Workload(seed, fleet, work)


def attempt_cost(task: WorkTask, swarm: Swarm) -> int:
    """estimate x cost per hour, in integer micro-dollars."""
    return int((task.estimate_hours * swarm.profile.cost_per_hour_micros).to_integral_value(
        ROUND_HALF_UP))


def success_probability(task: WorkTask, swarm: Swarm) -> Decimal:
    p = Decimal(1)
    for cap in task.capabilities:
        p *= swarm.skill[cap]
    return p


class _Tally:
    def __init__(self) -> None:
        self.total = self.wasted = self.failed = self.unqualified = 0
        self.attempts = self.done = self.abandoned = self.fallbacks = 0
        self.attempts_unqualified = self.attempts_failed = 0
        self.by_swarm: dict[str, int] = {}

    def attempt(self, task: WorkTask, swarm: Swarm, rng: random.Random) -> bool:
        cost = attempt_cost(task, swarm)
        # a uniform draw in [0, 1) with 6 decimals, compared exactly
        ok = Decimal(rng.randrange(MICROS)) / MICROS < success_probability(task, swarm)
        unqualified = coverage(task.capabilities, swarm.profile.capabilities) < QUALIFIED
        self.attempts += 1
        self.total += cost
        self.by_swarm[swarm.profile.id] = self.by_swarm.get(swarm.profile.id, 0) + cost
        if not ok:
            self.failed += cost
            self.attempts_failed += 1
        if unqualified:
            self.unqualified += cost
            self.attempts_unqualified += 1
        if not ok or unqualified:
            self.wasted += cost
        return ok

    def report(self, tasks: int) -> dict[str, Any]:
        waste = Decimal(self.wasted) / Decimal(self.total) if self.total else Decimal(0)
        return {
            "total_spend_micros": self.total, "total_spend": format_usd(self.total),
            "wasted_spend_micros": self.wasted, "wasted_spend": format_usd(self.wasted),
            "failed_spend_micros": self.failed, "unqualified_spend_micros": self.unqualified,
            "waste": float(waste.quantize(Decimal("0.0001"), ROUND_HALF_UP)),
            "waste_pct": float((waste * 100).quantize(Decimal("0.01"), ROUND_HALF_UP)),
            "tasks": tasks, "tasks_done": self.done, "tasks_abandoned": self.abandoned,
            "attempts": self.attempts, "attempts_failed": self.attempts_failed,
            "attempts_unqualified": self.attempts_unqualified,
            "avg_attempts_per_task": float((Decimal(self.attempts) / tasks).quantize(
                Decimal("0.001"), ROUND_HALF_UP)),
            "fallbacks": self.fallbacks,
            "spend_by_swarm_micros": dict(sorted(self.by_swarm.items())),
        }


def _run_fixed(work: Workload, name: str, pick: Callable[[WorkTask, random.Random], Swarm],
               progress: Progress | None) -> dict[str, Any]:
    """A strategy without the bus: ``pick`` chooses each attempt's swarm."""
    choose = random.Random(f"{work.seed}/{name}/assign")
    outcomes = random.Random(f"{work.seed}/{name}/outcomes")
    tally = _Tally()
    for n, task in enumerate(work.tasks, 1):
        for _ in range(MAX_ATTEMPTS):
            if tally.attempt(task, pick(task, choose), outcomes):
                tally.done += 1
                break
        else:
            tally.abandoned += 1
        if progress is not None:
            progress(name, n, len(work.tasks))
    return tally.report(len(work.tasks))


def _run_random(work: Workload, progress: Progress | None) -> dict[str, Any]:
    return _run_fixed(work, "random", lambda task, rng: rng.choice(work.swarms), progress)


def _run_floor(work: Workload, progress: Progress | None) -> dict[str, Any]:
    def best(task: WorkTask, rng: random.Random) -> Swarm:
        qualified = [s for s in work.swarms
                     if coverage(task.capabilities, s.profile.capabilities) >= QUALIFIED] or work.swarms
        return max(qualified, key=lambda s: (success_probability(task, s), s.profile.id))

    return _run_fixed(work, "floor", best, progress)


def reputation(successes: int, attempts: int) -> Decimal:
    """The seeds' formula over a swarm's outcomes so far: 1 with no history;
    else the success rate, with a 20 % penalty below the SLO's rate."""
    if attempts == 0:
        return Decimal(1)
    rate = Decimal(successes) / attempts
    value = rate * Decimal("0.8") if rate < SLO_SUCCESS else rate
    return value.quantize(Decimal("0.0001"), ROUND_HALF_UP)


async def _run_governor(gov: IFGovernor, work: Workload,
                        progress: Progress | None) -> dict[str, Any]:
    outcomes = random.Random(f"{work.seed}/governor/outcomes")
    by_id = {s.profile.id: s for s in work.swarms}
    history = {s.profile.id: [0, 0] for s in work.swarms}  # attempts, successes
    tally = _Tally()
    for n, task in enumerate(work.tasks, 1):
        for _ in range(MAX_ATTEMPTS):
            profile = await gov.find_qualified_swarm(task.capabilities)
            if profile is None:
                candidates = await gov.explain_match(task.capabilities)
                if not candidates:
                    raise BenchError("the governor has no registered swarms")
                tally.fallbacks += 1
                swarm = by_id[candidates[0].swarm_id]
            else:
                swarm = by_id[profile.id]
            ok = tally.attempt(task, swarm, outcomes)
            debit = await gov.track_cost(swarm.profile.id, "bench-waste-attempt",
                                         attempt_cost(task, swarm), task_id=task.id)
            if debit.tripped:
                raise BenchError(f"the budget of {swarm.profile.id} tripped; it must not")
            seen = history[swarm.profile.id]
            seen[0] += 1
            seen[1] += ok
            await gov.set_reputation(swarm.profile.id, reputation(seen[1], seen[0]), by="bench-waste")
            if ok:
                tally.done += 1
                break
        else:
            tally.abandoned += 1
        if progress is not None:
            progress("governor", n, len(work.tasks))
    return tally.report(len(work.tasks))


async def bench_waste(url: str, *, seed: int = 1, tasks: int = 200, swarms: int = 12,
                      cleanup: bool = True, server: dict[str, Any] | None = None,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Run the seeded workload with random assignment and with the governor on
    the bus of ``url`` (a fresh namespace); ``cleanup`` deletes its keys
    afterwards. Returns a JSON-ready dict (see the module docs)."""
    work = make_workload(seed, tasks, swarms)
    namespace = f"bench{uuid.uuid4().hex[:10]}"
    run_url = with_namespace(url, namespace)
    started = time.time()
    t0 = time.perf_counter()
    strategies: dict[str, dict[str, Any]] = {"random": _run_random(work, progress),
                                             "floor": _run_floor(work, progress)}
    cleaned: dict[str, Any] | None = None
    async with connect(run_url) as bus:
        try:
            gov = IFGovernor(bus)
            for n, s in enumerate(work.swarms, 1):
                await gov.register_swarm(s.profile, budget_micros=BUDGET_MICROS)
                if progress is not None:
                    progress("setup", n, len(work.swarms))
            strategies["governor"] = await _run_governor(gov, work, progress)
            budgets = {sid: {"limit_micros": b.limit_micros, "spent_micros": b.spent_micros,
                             "spent": format_usd(b.spent_micros),
                             "remaining_micros": b.remaining_micros}
                       for sid, b in sorted((await gov.budgets()).items())}
            ledger_entries = len(await gov.ledger())
            reputations = {p.id: str(p.reputation) for p in sorted(await gov.profiles(), key=lambda p: p.id)}
        except BaseException:
            if cleanup:
                with contextlib.suppress(Exception):
                    await clean_namespace(bus, None)
            raise
        if cleanup:
            cleaned = await clean_namespace(bus, progress)
    targets = [target_row(tid, description, strategy, "waste", threshold,
                          strategies[strategy]["waste"], applies=True, compare=compare)
               for tid, strategy, compare, threshold, description in TARGETS]
    return {
        "benchmark": "waste",
        "backend": parse_url(run_url).scheme,
        "url": run_url,
        "namespace": namespace,
        "seed": seed,
        "model": {
            "capability_pool": len(BUILTIN_CAPABILITIES),
            "declared_capabilities_per_swarm": [2, 5],
            "required_capabilities_per_task": [1, 3],
            "cost_per_hour_micros": [COST_CENTS[0] * 10_000, COST_CENTS[1] * 10_000],
            "estimate_hours": [str(Decimal(ESTIMATE_HALF_HOURS[0]) / 2),
                               str(Decimal(ESTIMATE_HALF_HOURS[1]) / 2)],
            "hidden_skill_declared": [str(Decimal(v) / PER_MILLE) for v in DECLARED_SKILL],
            "hidden_skill_other": [str(Decimal(v) / PER_MILLE) for v in OTHER_SKILL],
            "reputation": "starts at 1; after each governor attempt: success rate so far, x0.8 "
                          "below the SLO's 0.95 (the seeds' formula)",
            "max_attempts": MAX_ATTEMPTS,
            "qualified_coverage": QUALIFIED,
            "waste": "(spend on failed attempts + spend on attempts with coverage < 0.7, each "
                     "attempt once) / total spend",
        },
        "workload": {
            "tasks": len(work.tasks), "swarms": len(work.swarms),
            "required_capabilities": sum(len(t.capabilities) for t in work.tasks),
            "estimate_hours": str(sum((t.estimate_hours for t in work.tasks), Decimal(0))),
            "fleet": [{"id": s.profile.id, "capabilities": s.profile.capabilities,
                       "cost_per_hour_micros": s.profile.cost_per_hour_micros} for s in work.swarms],
        },
        "strategies": strategies,
        "budgets": budgets,
        "reputations": reputations,
        "ledger_entries": ledger_entries,
        "targets": targets,
        "server": dict(server or {}),
        "machine": machine_info(),
        "cleanup": cleaned,
        "started_at": started_at(started),
        "duration_s": round(time.perf_counter() - t0, 2),
    }
