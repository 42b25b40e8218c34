"""The seeds' ``IFGovernor(coordinator, policy)``, delegating to the real
:class:`infrafabric.governor.IFGovernor` on the bus.

The seeds call its methods synchronously (``governor.find_qualified_swarm(
required_capabilities=[...], max_cost=5.0)``); each has an ``*_async`` twin
for async code (see :mod:`infrafabric.compat._runtime`). Dollars are
converted once, exactly (:mod:`infrafabric.compat.money`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from infrafabric.compat._runtime import fleet_for, run_sync
from infrafabric.compat.money import Dollars, to_decimal, to_micros
from infrafabric.compat.schemas import ResourcePolicy, SwarmProfile, capability_names
from infrafabric.errors import ConfigurationError
from infrafabric.fleet import Fleet
from infrafabric.governor import Debit
from infrafabric.governor import IFGovernor as RealGovernor
from infrafabric.governor import ResourcePolicy as GovernorPolicy

__all__ = ["IFGovernor"]


class IFGovernor:
    """The seeds' governor: ``IFGovernor(coordinator, policy)``.

    ``coordinator``: the seeds' :class:`~infrafabric.compat.IFCoordinator`
    (its bus is used) or None (the bound session's bus, else ``IF_BUS_URL``).
    ``policy``: the seeds' :class:`~infrafabric.compat.ResourcePolicy` (or the
    governor's own): written to the bus before this object's first call, if
    the policy there differs (the fleet has one policy; it is witnessed). None
    keeps the bus's policy. Every record lives on the bus (profiles, budgets,
    breakers, ledger), so other processes and ``ifctl`` see the same."""

    def __init__(self, coordinator: Any = None, policy: ResourcePolicy | GovernorPolicy | None = None, *,
                 url: str | None = None) -> None:
        self.coordinator = coordinator
        self.policy = policy
        self._wanted: GovernorPolicy | None = None
        self._applied = False
        if isinstance(policy, ResourcePolicy):
            self._wanted = policy.to_policy()
        elif isinstance(policy, GovernorPolicy):
            self._wanted = policy
        elif policy is not None:
            raise ConfigurationError(f"policy must be a ResourcePolicy, got {type(policy).__name__}")
        if url is None and coordinator is not None:
            bus = getattr(coordinator, "event_bus", None)
            url = getattr(bus, "url", None)
            if not isinstance(url, str | None):
                raise ConfigurationError("coordinator must be the seeds' IFCoordinator "
                                         "(infrafabric.compat.IFCoordinator) or None")
        self.url = url

    @contextlib.asynccontextmanager
    async def _governor(self) -> AsyncIterator[RealGovernor]:
        async with fleet_for(self.url) as fleet:
            await self._apply_policy(fleet)
            yield fleet.governor

    async def _apply_policy(self, fleet: Fleet) -> None:
        """Write this object's policy once, before its first call, if the fleet's differs
        (later changes, e.g. by `ifctl governor policy`, are not fought over)."""
        if self._wanted is not None and not self._applied:
            if await fleet.governor.policy() != self._wanted:
                await fleet.governor.set_policy(self._wanted, by="infrafabric.compat")
            self._applied = True

    # -- registry ------------------------------------------------------------------------

    async def register_swarm_async(self, profile: SwarmProfile) -> None:
        """Register the swarm: its governor profile and coordinator record, and
        (with ``current_budget_remaining``) a budget with that much left."""
        if not isinstance(profile, SwarmProfile):
            raise ConfigurationError(f"profile must be a SwarmProfile, got {type(profile).__name__}")
        record, remaining = profile.to_profile(), profile.budget_micros()
        async with self._governor() as gov:
            await gov.register_swarm(record)
            if remaining is not None:
                current = await gov.budget(record.id)
                used = 0 if current is None else current.spent_micros + current.reserved_micros
                await gov.set_budget(record.id, used + remaining)

    def register_swarm(self, profile: SwarmProfile) -> None:
        run_sync("register_swarm", lambda: self.register_swarm_async(profile),
                 twin="governor.register_swarm_async")

    # -- matching ------------------------------------------------------------------------

    async def find_qualified_swarm_async(self, required_capabilities: Any,
                                         max_cost: Dollars | None = None) -> str | None:
        """The id of the best qualified swarm (coverage x reputation / cost per
        hour, above the policy's threshold, breaker closed, budget left, at most
        ``max_cost`` dollars per hour), or None when nobody qualifies (see
        :meth:`explain_match_async` for why)."""
        required = capability_names(required_capabilities, what="required_capabilities")
        limit = None if max_cost is None else to_micros(max_cost, what="max_cost")
        async with self._governor() as gov:
            found = await gov.find_qualified_swarm(required, limit)
        return None if found is None else found.id

    def find_qualified_swarm(self, required_capabilities: Any, max_cost: Dollars | None = None) -> str | None:
        return run_sync("find_qualified_swarm",
                        lambda: self.find_qualified_swarm_async(required_capabilities, max_cost),
                        twin="governor.find_qualified_swarm_async")

    async def explain_match_async(self, required_capabilities: Any,
                                  max_cost: Dollars | None = None) -> list[dict[str, Any]]:
        """Every swarm considered, best first: id, coverage, score, and why it is excluded (if it is)."""
        required = capability_names(required_capabilities, what="required_capabilities")
        limit = None if max_cost is None else to_micros(max_cost, what="max_cost")
        async with self._governor() as gov:
            return [{"swarm_id": c.swarm_id, "coverage": c.coverage, "score": c.score, "excluded": c.excluded}
                    for c in await gov.explain_match(required, limit)]

    def explain_match(self, required_capabilities: Any,
                      max_cost: Dollars | None = None) -> list[dict[str, Any]]:
        return run_sync("explain_match", lambda: self.explain_match_async(required_capabilities, max_cost),
                        twin="governor.explain_match_async")

    # -- money -----------------------------------------------------------------------------

    async def track_cost_async(self, swarm_id: str, operation: str, cost: Dollars) -> Debit:
        """Debit ``cost`` dollars (exactly) from the swarm's budget by
        compare-and-swap on the bus; the breaker trips when it runs out."""
        micros = to_micros(cost, what="cost")
        async with self._governor() as gov:
            return await gov.track_cost(swarm_id, operation, micros)

    def track_cost(self, swarm_id: str, operation: str, cost: Dollars) -> Debit:
        return run_sync("track_cost", lambda: self.track_cost_async(swarm_id, operation, cost),
                        twin="governor.track_cost_async")

    async def check_budget_async(self, swarm_id: str, cost: Dollars | None = None) -> bool:
        """Whether the swarm may take work: breaker closed and budget left (no
        budget: unmetered); with ``cost``, also that what is left covers it."""
        micros = None if cost is None else to_micros(cost, what="cost")
        async with self._governor() as gov:
            if await gov.stopped(swarm_id) is not None:
                return False
            if micros is None:
                return True
            budget = await gov.usable_budget(swarm_id)
            return budget is None or budget.remaining_micros >= micros

    def check_budget(self, swarm_id: str, cost: Dollars | None = None) -> bool:
        return run_sync("check_budget", lambda: self.check_budget_async(swarm_id, cost),
                        twin="governor.check_budget_async")

    async def get_budget_report_async(self) -> dict[str, Decimal]:
        """Each budgeted swarm's remaining dollars, exactly (``Decimal``, not the seeds' float)."""
        async with self._governor() as gov:
            return {sid: to_decimal(b.remaining_micros) for sid, b in sorted((await gov.budgets()).items())}

    def get_budget_report(self) -> dict[str, Decimal]:
        return run_sync("get_budget_report", self.get_budget_report_async,
                        twin="governor.get_budget_report_async")

    async def reset_circuit_breaker_async(self, swarm_id: str, new_budget: Dollars, *,
                                          by: str = "infrafabric.compat") -> None:
        """Close the breaker with a new budget (witnessed; the only way it closes)."""
        micros = to_micros(new_budget, what="new_budget")
        async with self._governor() as gov:
            await gov.reset_circuit_breaker(swarm_id, by=by, budget_micros=micros)

    def reset_circuit_breaker(self, swarm_id: str, new_budget: Dollars, *,
                              by: str = "infrafabric.compat") -> None:
        run_sync("reset_circuit_breaker",
                 lambda: self.reset_circuit_breaker_async(swarm_id, new_budget, by=by),
                 twin="governor.reset_circuit_breaker_async")

    async def request_help_for_blocker(self, blocked_swarm_id: str, blocker_description: dict[str, Any]
                                       ) -> list[str]:
        """The seeds' async "gang up on blocker": the helpers' swarm ids (empty:
        a human was asked). ``blocker_description["capabilities"]`` names what is needed."""
        async with self._governor() as gov:
            plan = await gov.request_help_for_blocker(blocked_swarm_id, blocker_description)
        return [h["swarm_id"] for h in plan["helpers"]]
