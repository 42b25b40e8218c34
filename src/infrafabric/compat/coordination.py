"""The coordination documents' ``from infrafabric.coordination import
WeightedCoordinator, Agent, AgentProfile`` and ``coordinate(task)['best_agent']``.

An agent is a swarm on the bus: :meth:`WeightedCoordinator.add_agent`
registers it with the governor (its capabilities; the profile's name is the
swarm id). :meth:`~WeightedCoordinator.coordinate` scores each agent the
governor's way, from the records on the bus:

    score = coverage x reputation x weight / cost per hour

* coverage: the share of the task's ``required_skills`` (or ``capabilities``)
  the agent offers; a skill without ``:`` (``infra``) is offered by any
  capability whose domain or skill it is (``infra:distributed-systems``);
  below the policy's ``min_capability_match`` the agent is excluded;
* reputation: the governor's, which the chassis' SLO tracking keeps (each
  task an agent runs in the chassis, or records through
  :meth:`Agent.record_task`, recomputes it);
* weight: the profile's ``base_weight``, plus ``success_bonus`` while the
  reputation (as a percentage) meets ``success_threshold`` (the documents'
  "late bloomer" bonus, earned by SLO compliance);
* an agent whose breaker is open or budget spent is excluded.

Scores are ``Decimal``; ties go to the agent added first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from infrafabric.compat._runtime import fleet_for, run_sync
from infrafabric.compat.money import Dollars, to_micros
from infrafabric.compat.schemas import capability_names, share
from infrafabric.errors import ConfigurationError
from infrafabric.governor import SwarmProfile as GovernorProfile

log = logging.getLogger(__name__)

__all__ = ["Agent", "AgentProfile", "WeightedCoordinator"]


@dataclass
class AgentProfile:
    """The documents' agent profile; ``capabilities`` and ``cost_per_hour``
    (dollars, default the governor's $1.00) are this surface's additions:
    without capabilities an agent covers no skill."""

    name: str
    base_weight: float | Decimal = 1.0
    success_bonus: float | Decimal = 0.0
    success_threshold: float | Decimal = 75  # percent
    tier: str = "baseline"
    description: str = ""
    capabilities: list[Any] = field(default_factory=list)
    cost_per_hour: Dollars | None = None


class Agent:
    """An agent of the fleet, described by its :class:`AgentProfile`."""

    def __init__(self, profile: AgentProfile, *, url: str | None = None) -> None:
        if not isinstance(profile, AgentProfile):
            raise ConfigurationError(f"profile must be an AgentProfile, got {type(profile).__name__}")
        self.profile = profile
        self.url = url
        self.name = profile.name

    async def record_task_async(self, latency_ms: float | None, success: bool) -> Decimal:
        """One finished task as an SLO sample: recomputes (and returns) the
        agent's reputation, which the governor matches by."""
        async with fleet_for(self.url) as fleet:
            return await fleet.chassis.reputation.record_task(self.name, latency_ms, success)

    def record_task(self, latency_ms: float | None, success: bool) -> Decimal:
        return run_sync("record_task", lambda: self.record_task_async(latency_ms, success),
                        twin="agent.record_task_async")


def _number(value: object, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ConfigurationError(f"{what} must be a number, got {value!r}")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite() or number < 0:
        raise ConfigurationError(f"{what} must be a finite number, at least 0, got {value!r}")
    return number


def _covered(skill: str, offered: list[str]) -> bool:
    if ":" in skill:
        return skill in offered
    return any(skill in cap.split(":") for cap in offered)


class WeightedCoordinator:
    """Capability-aware assignment over the fleet's governor (see the module docs)."""

    def __init__(self, *, url: str | None = None) -> None:
        self.url = url
        self.agents: list[Agent] = []

    async def add_agent_async(self, agent: Agent) -> None:
        """Register the agent as a swarm (keeping its reputation, if it has one)."""
        if not isinstance(agent, Agent):
            raise ConfigurationError(f"agent must be an Agent, got {type(agent).__name__}")
        p = agent.profile
        for what in ("base_weight", "success_bonus", "success_threshold"):
            _number(getattr(p, what), f"{p.name}: {what}")
        caps = capability_names(p.capabilities, what=f"{p.name}: capabilities")
        async with fleet_for(self.url) as fleet:
            profile = await fleet.register_swarm(p.name, caps)
            if p.cost_per_hour is not None or p.description:
                cost = (profile.cost_per_hour_micros if p.cost_per_hour is None
                        else to_micros(p.cost_per_hour, what=f"{p.name}: cost_per_hour"))
                await fleet.governor.register_swarm(GovernorProfile(
                    id=p.name, capabilities=caps, cost_per_hour_micros=cost, reputation=profile.reputation,
                    model=profile.model))
        self.agents = [a for a in self.agents if a.name != agent.name] + [agent]

    def add_agent(self, agent: Agent) -> None:
        run_sync("add_agent", lambda: self.add_agent_async(agent), twin="coordinator.add_agent_async")

    async def coordinate_async(self, task: dict[str, Any], verbose: bool = False) -> dict[str, Any]:
        """``{'task_id', 'best_agent' (None when nobody qualifies), 'scores',
        'excluded', 'required'}`` (see the module docs for the scoring)."""
        if not isinstance(task, dict):
            raise ConfigurationError(f"task must be a dict, got {type(task).__name__}")
        key = "required_skills" if "required_skills" in task else "capabilities"
        required = sorted(set(capability_names(task.get(key) or [], what=f"task[{key!r}]")))
        if not self.agents:
            raise ConfigurationError("no agents: add_agent() first")
        async with fleet_for(self.url) as fleet:
            gov = fleet.governor
            threshold = share((await gov.policy()).min_capability_match, what="min_capability_match")
            scores: dict[str, Decimal] = {}
            excluded: dict[str, str] = {}
            for agent in self.agents:
                p = agent.profile
                record = await gov.profile(agent.name)
                if record is None:
                    excluded[agent.name] = "not registered (add_agent)"
                    continue
                hits = sum(1 for skill in required if _covered(skill, record.capabilities))
                cov = Decimal(hits) / len(required) if required else Decimal(1)
                stopped = await gov.stopped(agent.name)
                if cov < threshold:
                    missing = [s for s in required if not _covered(s, record.capabilities)]
                    excluded[agent.name] = (f"coverage {cov:.0%} below {threshold:.0%} "
                                            f"(missing {', '.join(missing)})")
                elif stopped is not None:
                    excluded[agent.name] = stopped.message
                else:
                    weight = _number(p.base_weight, "base_weight")
                    if record.reputation * 100 >= _number(p.success_threshold, "success_threshold"):
                        weight += _number(p.success_bonus, "success_bonus")
                    scores[agent.name] = (cov * record.reputation * weight * 1_000_000
                                          / record.cost_per_hour_micros)
        order = {a.name: i for i, a in enumerate(self.agents)}
        best = min(scores, key=lambda n: (-scores[n], order[n])) if scores else None
        result = {"task_id": task.get("task_id", task.get("id")), "best_agent": best, "scores": scores,
                  "excluded": excluded, "required": required}
        level = logging.INFO if verbose else logging.DEBUG  # the seeds' verbose=True: logged, not printed
        for name in sorted(scores, key=lambda n: (-scores[n], order[n])):
            log.log(level, "%s: score %.6f", name, scores[name])
        for name, why in excluded.items():
            log.log(level, "%s: excluded: %s", name, why)
        return result

    def coordinate(self, task: dict[str, Any], verbose: bool = False) -> dict[str, Any]:
        return run_sync("coordinate", lambda: self.coordinate_async(task, verbose),
                        twin="coordinator.coordinate_async")
