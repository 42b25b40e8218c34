"""``IFGovernor``: who may take which work, and what it may cost.

Records on the bus (:mod:`infrafabric.bus.layout`): a :class:`SwarmProfile`
per swarm under ``gov/profiles/``, a :class:`Budget` (changed only by
compare-and-swap) under ``gov/budgets/``, a :class:`Breaker` under
``gov/breakers/``, one cost ledger entry per debit under ``gov/ledger/``,
the :class:`ResourcePolicy` at ``gov/policy``; escalations go to the
``orchestrator/escalations`` subject.

Every process's governor is a thin client over these records, so budgets
and breakers agree across the fleet. A debit is one compare-and-swap of the
budget record (through the record layer's retry policy): concurrent debits
from any number of processes neither lose an update nor overshoot by more
than one operation (see :meth:`track_cost`).

The governor is the coordinator's :class:`~infrafabric.coordinator.ClaimPolicy`
in an assembled fleet (:func:`infrafabric.open_fleet`): it stops swarms whose
breaker is open or budget spent, admits claims, routes pushes to qualified
swarms best first, answers blockers with helpers and counts each finished
attempt towards the breaker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from infrafabric.bus import EventBus
from infrafabric.bus.bounds import MAX_MICROS
from infrafabric.bus.layout import (
    BREAKERS,
    BUDGETS,
    ESCALATIONS,
    LEDGER,
    POLICY,
    PRESENCE,
    PROFILES,
    SWARMS,
    TASKS,
    WAITING,
    help_subject,
)
from infrafabric.bus.records import Mirrored, Records
from infrafabric.coordinator import ClaimPolicy, Presence, SwarmRecord, Task, coverage
from infrafabric.coordinator.core import make_swarm_record
from infrafabric.coordinator.presence import liveness as judge_liveness
from infrafabric.errors import (
    BreakerOpenError,
    BudgetExhaustedError,
    ConfigurationError,
    CorruptRecordError,
    SwarmStoppedError,
    TaskNotFoundError,
)
from infrafabric.governor.models import (
    MAX_HOLDS,
    Breaker,
    BreakerState,
    Budget,
    Hold,
    LedgerEntry,
    ResourcePolicy,
    SwarmProfile,
    format_usd,
)

__all__ = ["Candidate", "Debit", "IFGovernor", "cost_refusal", "estimated_cost"]

#: debits a budget record keeps beside its total (between JOURNAL and 2 x JOURNAL)
JOURNAL = 16
log = logging.getLogger(__name__)
#: matching among at most this many swarms reads their records one by one, not the whole fleet's
FEW = 32
#: a hold older than this whose claim is not on its task is given back (seconds; far above the
#: moment between a hold and its claim's compare-and-swap)
HOLD_GRACE = 60.0

#: ``async (operation, params) -> None``, e.g. a witness observer
Observer = Callable[[str, dict[str, Any]], Awaitable[None]]


#: what :meth:`IFGovernor._fleet_view` reads
_FleetView = tuple[ResourcePolicy, list[SwarmProfile], dict[str, Budget], dict[str, Breaker]]


@dataclass
class Candidate:
    """One swarm considered by :meth:`IFGovernor.explain_match`."""

    swarm_id: str
    coverage: float
    score: Decimal
    excluded: str | None = None


@dataclass
class Debit:
    """The outcome of :meth:`IFGovernor.track_cost`."""

    swarm_id: str
    cost_micros: int
    remaining_micros: int
    tripped: bool
    ledger_key: str
    notes: list[str] = field(default_factory=list)


class IFGovernor(ClaimPolicy):
    """Capability matching, budgets, circuit breakers and policy, on the bus;
    and, given to a coordinator as its ``policy``, who may take which work
    (see the module docs)."""

    name = "governor"

    def __new__(cls, *args: Any, **kwargs: Any) -> IFGovernor:
        """``IFGovernor(bus, ...)`` is this class. The seeds' ``IFGovernor(coordinator,
        policy)`` (two arguments, or either keyword) builds :class:`infrafabric.compat.IFGovernor`
        (docs/compat.md)."""
        if len(args) >= 2 or "coordinator" in kwargs or "policy" in kwargs:
            from infrafabric.compat.governor import IFGovernor as SeedGovernor  # the seeds' form only

            seed: Any = SeedGovernor(*args, **kwargs)
            return seed  # type: ignore[no-any-return]
        return super().__new__(cls)

    def __init__(self, bus: EventBus, *, observers: Iterable[Observer] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.bus = bus
        self.observers = list(observers)
        self.clock = clock
        self.webhook_timeout = 5.0
        # read for every claim: a long-lived coordinator's watcher has them kept by watches
        # (see follow()); every change still goes to the bus by compare-and-swap
        self._profiles = Mirrored(bus, PROFILES, SwarmProfile)
        self._budgets = Mirrored(bus, BUDGETS, Budget)
        self._breakers = Mirrored(bus, BREAKERS, Breaker)
        self._policy = Mirrored(bus, POLICY, ResourcePolicy)
        # the coordinator's records, which registering a swarm writes too (one step for both)
        self._swarms = Records(bus, SWARMS, SwarmRecord)
        self._tasks = Records(bus, TASKS, Task)
        self._presence = Records(bus, PRESENCE, Presence)
        self._waiting = Records(bus, WAITING, Presence)
        #: the fleet view (policy, profiles, budgets, breakers) being read now, shared by every
        #: caller that asks meanwhile (see :meth:`_fleet_view`)
        self._view_read: asyncio.Future[_FleetView] | None = None

    async def follow(self) -> None:
        """Keep the policy, profiles, budgets and breakers live by watches
        (the coordinator's watcher calls this): admission and routing read no
        record then. What another process changes is seen a moment later —
        a breaker it trips refuses this process's claims from then on, while
        the debit that spends a budget is a compare-and-swap on the bus."""
        await asyncio.gather(*(r.follow() for r in self._mirrors()))

    async def unfollow(self) -> None:
        await asyncio.gather(*(r.stop() for r in self._mirrors()))

    def _mirrors(self) -> tuple[Mirrored[Any], ...]:
        return (self._profiles, self._budgets, self._breakers, self._policy)

    async def policy_is_set(self) -> bool:
        """Whether a policy was stored (else the defaults are in force)."""
        return await self._policy.exists()

    async def policy(self) -> ResourcePolicy:
        """The policy in force: the stored one, else the defaults. A stored
        policy that does not read is reported (a warning on the ``infrafabric``
        logger) and the defaults apply until `ifctl governor policy` sets a good
        one: one bad record must not stop the whole fleet."""
        try:
            return await self._policy.read() or ResourcePolicy()
        except CorruptRecordError as exc:
            log.warning("%s; the default policy applies until one is set (ifctl governor policy FILE)",
                        exc.message)
            return ResourcePolicy()

    async def min_capability_match(self) -> float:
        """The policy's coverage threshold (what the coordinator checks claims against)."""
        return float((await self.policy()).min_capability_match)

    async def set_policy(self, policy: ResourcePolicy, *, by: str | None = None) -> None:
        await self._policy.put("", policy)
        await self._notify("policy_set", {"policy": policy.model_dump(mode="json"), "by": by})

    # -- swarms -----------------------------------------------------------------

    async def register_swarm(self, profile: SwarmProfile, *,
                             budget_micros: int | None = None) -> SwarmProfile:
        """Register (or update) a swarm: its profile and the coordinator's
        record of it (so it can claim and be pushed work); with
        ``budget_micros``, set its budget limit (keeping what it has spent)."""
        await self._profiles.put(profile.id, profile)
        if budget_micros is not None:
            await self.set_budget(profile.id, budget_micros)
        await self._swarms.put(profile.id, make_swarm_record(profile.id, profile.capabilities, self.clock()))
        await self._notify("swarm_registered", {"swarm_id": profile.id,
                                                "capabilities": profile.capabilities,
                                                "cost_per_hour_micros": profile.cost_per_hour_micros})
        return profile

    async def ensure_profile(self, swarm_id: str, capabilities: Iterable[str]) -> SwarmProfile:
        """Give a swarm a profile with these capabilities, keeping its cost,
        reputation and model if it has one (what ``ifctl swarm register`` does)."""
        caps = sorted(set(capabilities))

        def change(p: SwarmProfile | None) -> SwarmProfile:
            if p is None:
                return SwarmProfile(id=swarm_id, capabilities=caps)
            return p.model_copy(update={"capabilities": caps})

        record = make_swarm_record(swarm_id, caps, self.clock())  # validates before anything is written
        got = await self._profiles.mutate(swarm_id, change)
        assert got is not None
        profile = got.value
        await self._swarms.put(swarm_id, record)
        await self._notify("swarm_registered", {"swarm_id": swarm_id, "capabilities": caps})
        return profile

    async def profile(self, swarm_id: str) -> SwarmProfile | None:
        return await self._profiles.read(swarm_id)

    async def profiles(self) -> list[SwarmProfile]:
        return [v.value for v in await self._profiles.list()]

    async def set_reputation(self, swarm_id: str, reputation: Decimal, *, by: str | None = None
                             ) -> SwarmProfile:
        """Write a swarm's reputation (0-1) into its profile, which matching
        scores by; the chassis's SLO tracking calls this. A swarm without a
        profile raises :class:`TaskNotFoundError`."""
        value = Decimal(reputation)
        if not Decimal(0) <= value <= Decimal(1):
            raise ConfigurationError(f"reputation for {swarm_id} must be within 0-1, got {reputation}")
        value = value.quantize(Decimal("0.0001"))
        got = await self._profiles.mutate(
            swarm_id, lambda p: None if p is None else p.model_copy(update={"reputation": value}))
        profile = None if got is None else got.value
        if profile is None:
            raise TaskNotFoundError(f"swarm {swarm_id!r} has no governor profile",
                                    hint=f"ifctl governor register {swarm_id}")
        await self._notify("reputation_set", {"swarm_id": swarm_id, "reputation": str(value), "by": by})
        return profile

    # -- budgets ---------------------------------------------------------------------

    async def set_budget(self, swarm_id: str, limit_micros: int) -> Budget:
        """Set the budget's limit, keeping what was spent. A budget record that
        no longer decodes is replaced (this is how it is repaired)."""
        _check_micros(limit_micros, f"budget for {swarm_id}")
        now = self.clock()
        got = await self._budgets.mutate(swarm_id, lambda b: (b or Budget(limit_micros=0)).model_copy(
            update={"limit_micros": limit_micros, "updated_at": now}), replace_corrupt=True)
        assert got is not None
        budget = got.value
        await self._notify("budget_set", {"swarm_id": swarm_id, "limit_micros": limit_micros})
        return budget

    async def budgets(self) -> dict[str, Budget]:
        """Every swarm's budget, by swarm id."""
        return await self._budgets.all()

    async def budget(self, swarm_id: str) -> Budget | None:
        """The swarm's budget (None: unmetered); :class:`CorruptRecordError` if
        its record does not read (repair: `reset-circuit-breaker --budget`)."""
        return await self._budgets.read(swarm_id)

    async def usable_budget(self, swarm_id: str) -> Budget | None:
        """:meth:`budget`, with one whose record does not read counted as spent
        (fail closed) and reported as a warning: what admission and status use,
        so one bad record stops only its own swarm."""
        try:
            return await self.budget(swarm_id)
        except CorruptRecordError as exc:
            log.warning("%s; the budget counts as spent", exc.message)
            return Budget(limit_micros=0)

    async def reserve(self, swarm_id: str, amount_micros: int) -> bool:
        """Hold ``amount_micros`` of the budget before spending it; False (and
        nothing held) if the budget cannot cover it."""
        _check_micros(amount_micros, "a reservation")
        ok = False

        def change(b: Budget | None) -> Budget | None:
            nonlocal ok
            ok = b is not None and b.remaining_micros >= amount_micros
            if not ok or b is None:
                return None
            return b.model_copy(update={"reserved_micros": b.reserved_micros + amount_micros,
                                        "updated_at": self.clock()})

        await self._budgets.mutate(swarm_id, change)
        return ok

    async def track_cost(self, swarm_id: str, operation: str, cost_micros: int, *,
                         reserved_micros: int = 0, task_id: str | None = None,
                         model: str | None = None) -> Debit:
        """Debit ``cost_micros`` (releasing ``reserved_micros`` held for it).

        The cost was incurred, so it is always recorded — the ledger tells the
        truth. If it takes the budget below zero the breaker trips, so the
        swarm can start nothing more: overshoot is bounded by one operation
        (by the difference from its reservation, when it reserved).
        """
        _check_micros(cost_micros, "cost")
        now = self.clock()
        key = f"{LEDGER}{int(now * 1e6):020d}-{secrets.token_hex(4)}"
        budget = await self._debit(swarm_id, LedgerEntry(
            key=key, swarm_id=swarm_id, operation=operation, cost_micros=cost_micros, task_id=task_id,
            model=model, at=now, remaining_micros=0), reserved_micros)
        # the entry is already safe in the budget's journal; this makes it visible at its own key now
        entry = next(e for e in reversed(budget.journal) if e.key == key)
        await self.bus.create(key, entry.model_dump_json(exclude={"key"}))
        await self._notify("cost_tracked", {"swarm_id": swarm_id, "operation": operation,
                                            "cost_micros": cost_micros, "task_id": task_id,
                                            "remaining_micros": budget.remaining_micros})
        debit = Debit(swarm_id, cost_micros, budget.remaining_micros, False, key)
        if budget.remaining_micros < 0:
            debit.tripped = await self.trip(
                swarm_id, f"budget exhausted: {format_usd(budget.spent_micros)} spent of "
                          f"{format_usd(budget.limit_micros)}", by="governor")
        return debit

    async def _debit(self, swarm_id: str, entry: LedgerEntry, reserved_micros: int) -> Budget:
        """One compare-and-swap: spent, reservation and the journal together.
        A full journal first writes its oldest half to ``gov/ledger/``
        (create-if-absent, so repeating it is harmless) and drops them. A debit
        whose write landed though its answer was lost is recognised by its
        ledger key in the journal, and is not applied again."""
        async def change(current: Budget | None) -> Budget | None:
            if current is None:
                raise TaskNotFoundError(f"swarm {swarm_id!r} has no budget",
                                        hint=f"ifctl governor register {swarm_id} --budget N")
            if any(e.key == entry.key for e in current.journal):
                return None  # this debit is in already
            journal = list(current.journal)
            if len(journal) >= 2 * JOURNAL:
                settled, journal = journal[:JOURNAL], journal[JOURNAL:]
                await asyncio.gather(*(self.bus.create(e.key, e.model_dump_json(exclude={"key"}))
                                       for e in settled))
            spent = current.spent_micros + entry.cost_micros
            reserved = max(0, current.reserved_micros - reserved_micros)
            holds = current.holds
            if entry.task_id is not None and not reserved_micros:
                # a cost of a claimed task is drawn from what its claim holds, so it is not counted twice
                holds, drawn = _draw(holds, entry.task_id, entry.cost_micros)
                reserved = max(0, reserved - drawn)
            left = current.limit_micros - spent - reserved
            journal.append(entry.model_copy(update={"remaining_micros": left}))
            return current.model_copy(update={"spent_micros": spent, "reserved_micros": reserved,
                                              "updated_at": entry.at, "journal": journal, "holds": holds})

        got = await self._budgets.mutate(swarm_id, change)
        assert got is not None
        return got.value

    async def ledger(self) -> list[dict[str, Any]]:
        """Every ledger entry, oldest first: those under ``gov/ledger/`` and any
        still only in a budget's journal (a debit whose process died before
        writing its key)."""
        entries = {e.key: json.loads(e.value) async for e in self.bus.scan(LEDGER)}
        for budget in (await self.budgets()).values():
            for entry in budget.journal:
                entries.setdefault(entry.key, entry.model_dump(exclude={"key"}))
        return [entries[k] for k in sorted(entries)]

    # -- breakers ---------------------------------------------------------------------

    async def breaker(self, swarm_id: str) -> Breaker:
        """The swarm's breaker (closed without a record). One whose record does
        not read counts as open: the governor fails closed for that swarm
        until `ifctl governor reset-circuit-breaker` (or `ifctl doctor`)."""
        try:
            return await self._breakers.read(swarm_id) or Breaker()
        except CorruptRecordError as exc:
            log.warning("%s; the breaker counts as open", exc.message)
            return Breaker(state=BreakerState.OPEN, reason="its breaker record does not read (ifctl doctor)")

    async def breakers(self) -> dict[str, Breaker]:
        """Every stored breaker, by swarm id (a swarm without one is closed)."""
        return await self._breakers.all()

    async def trip(self, swarm_id: str, reason: str, *, by: str | None = None) -> bool:
        """Open the swarm's breaker. True if this call opened it (it escalates);
        False if it was already open."""
        opened = False
        now = self.clock()

        def change(b: Breaker | None) -> Breaker | None:
            nonlocal opened
            current = b or Breaker()
            if current.state is BreakerState.OPEN and (current.changed_at, current.reason,
                                                       current.changed_by) == (now, reason, by):
                opened = True  # this call's write landed though its answer was lost
                return None
            opened = current.state is BreakerState.CLOSED
            if not opened:
                return None
            return current.model_copy(update={"state": BreakerState.OPEN, "reason": reason,
                                              "changed_at": now, "changed_by": by})

        await self._breakers.mutate(swarm_id, change)
        if opened:
            log.warning("circuit breaker OPEN for %s: %s", swarm_id, reason)
            await self._notify("circuit_breaker_tripped", {"swarm_id": swarm_id, "reason": reason,
                                                           "by": by})
            await self.escalate({"type": "circuit_breaker_open", "swarm_id": swarm_id, "reason": reason,
                                 "by": by, "timestamp": self.clock()})
        return opened

    async def escalate(self, report: dict[str, Any]) -> None:
        """Tell the orchestrator: publish ``report`` on the escalation subject
        and, when the policy names an ``escalation_webhook``, POST it there as
        JSON. A webhook that fails or takes longer than
        :attr:`webhook_timeout` seconds is logged (a warning on the
        ``infrafabric`` logger) and witnessed; it never undoes or blocks what
        is being escalated beyond that timeout."""
        body = json.dumps(report, default=str)
        await self.bus.publish(ESCALATIONS, body)
        url = (await self.policy()).escalation_webhook
        if url is None:
            return
        try:
            status = await asyncio.to_thread(_post_json, url, body.encode(), self.webhook_timeout)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            log.warning("escalation webhook %s failed: %s (the %s escalation of swarm %s)", url, reason,
                        report.get("type"), report.get("swarm_id") or report.get("blocked_swarm_id"))
            await self._notify("escalation_webhook_failed", {"url": url, "type": report.get("type"),
                                                             "error": str(reason)})
            return
        await self._notify("escalation_webhook_sent", {"url": url, "type": report.get("type"),
                                                       "status": status})

    async def reset_circuit_breaker(self, swarm_id: str, *, by: str,
                                    budget_micros: int | None = None) -> Breaker:
        """Close the breaker (the only way it closes), optionally with a new budget."""
        if budget_micros is not None:
            await self.set_budget(swarm_id, budget_micros)
            # a new budget starts from nothing spent; claims in progress still hold their estimates
            await self._budgets.mutate(swarm_id, lambda b: None if b is None else b.model_copy(
                update={"spent_micros": 0, "reserved_micros": b.held_micros, "updated_at": self.clock()}))
        got = await self._breakers.mutate(swarm_id, lambda b: Breaker(
            state=BreakerState.CLOSED, reason="manual reset", changed_at=self.clock(), changed_by=by),
            replace_corrupt=True)
        assert got is not None
        breaker = got.value
        await self._notify("circuit_breaker_reset", {"swarm_id": swarm_id, "by": by,
                                                     "budget_micros": budget_micros})
        return breaker

    async def record_outcome(self, swarm_id: str, *, success: bool) -> Breaker:
        """Count consecutive failures; the policy's threshold trips the breaker.
        A coordinator whose policy this governor is reports every completed
        and failed attempt itself (:meth:`on_outcome`): call this only for
        outcomes the coordinator never sees."""
        if success:
            current = await self.breaker(swarm_id)
            if current.consecutive_failures == 0:
                return current  # nothing to reset: no write on the common path
        threshold = (await self.policy()).circuit_breaker_failure_threshold
        got = await self._breakers.mutate(swarm_id, lambda b: (b or Breaker()).model_copy(
            update={"consecutive_failures": 0 if success else (b or Breaker()).consecutive_failures + 1}))
        assert got is not None
        breaker = got.value
        if not success and breaker.consecutive_failures >= threshold:
            await self.trip(swarm_id, f"{breaker.consecutive_failures} consecutive failures", by="governor")
            return await self.breaker(swarm_id)
        return breaker

    # -- matching -----------------------------------------------------------------------

    async def explain_match(self, required: list[str], max_cost_per_hour_micros: int | None = None, *,
                            among: Collection[str] | None = None, task: Task | None = None
                            ) -> list[Candidate]:
        """Every registered swarm (or those of ``among``) with its coverage,
        score and (if any) the reason it is excluded; best first, ties broken
        by swarm id. ``among``, a few swarms: only their records are read.
        ``task``: also exclude swarms whose claim of it the policy would
        refuse on cost (:func:`cost_refusal`)."""
        if among is not None and len(among) <= FEW:
            ids = sorted(set(among))
            policy, found, money, fuses = await asyncio.gather(
                self.policy(), asyncio.gather(*(self.profile(i) for i in ids)),
                asyncio.gather(*(self.usable_budget(i) for i in ids)),
                asyncio.gather(*(self.breaker(i) for i in ids)))
            profiles = [p for p in found if p is not None]
            budgets = {i: b for i, b in zip(ids, money, strict=True) if b is not None}
            breakers = dict(zip(ids, fuses, strict=True))
        else:
            policy, profiles, budgets, breakers = await self._fleet_view()
        threshold = float(policy.min_capability_match)
        out = []
        for p in profiles:
            budget, breaker = budgets.get(p.id), breakers.get(p.id, Breaker())
            cov = coverage(required, p.capabilities)
            score = Decimal(str(cov)) * p.reputation * 1_000_000 / Decimal(p.cost_per_hour_micros)
            excluded = None
            if cov < threshold:
                missing = sorted(set(required) - set(p.capabilities))
                excluded = f"coverage {cov:.0%} below {threshold:.0%} (missing {', '.join(missing)})"
            elif max_cost_per_hour_micros is not None and p.cost_per_hour_micros > max_cost_per_hour_micros:
                excluded = (f"costs {format_usd(p.cost_per_hour_micros)}/h, more than "
                            f"{format_usd(max_cost_per_hour_micros)}/h")
            elif breaker.state is BreakerState.OPEN:
                excluded = f"circuit breaker open: {breaker.reason}"
            elif budget is not None and budget.remaining_micros <= 0:
                excluded = "no budget left"  # no budget at all means unmetered
            elif task is not None:
                excluded = cost_refusal(p, task, policy, budget)
            out.append(Candidate(p.id, cov, score, excluded))
        return sorted(out, key=lambda c: (c.excluded is not None, -c.score, c.swarm_id))

    async def _fleet_view(self) -> _FleetView:
        """The policy, profiles, budgets and breakers: four reads whatever the
        fleet's size, and one set of them for every caller that asks while it
        is under way (a bulk import pushes many tasks at once: they share it).
        A joining caller gets a view read at most one round trip before it
        asked, which routing a push can afford; admission reads for itself."""
        if self._view_read is None or self._view_read.done():
            self._view_read = asyncio.ensure_future(asyncio.gather(
                self.policy(), self.profiles(), self.budgets(), self.breakers()))
        return await asyncio.shield(self._view_read)

    async def find_qualified_swarm(self, required_capabilities: list[str],
                                   max_cost: int | None = None) -> SwarmProfile | None:
        """The best qualified swarm (score = coverage x reputation / cost per
        hour), or None when nobody qualifies. ``max_cost``: micro-dollars/hour, an
        int (a float such as the seeds' ``5.0`` is refused, never read as $0.000005)."""
        if max_cost is not None:
            _check_micros(max_cost, "max_cost (per hour)")
        for c in await self.explain_match(required_capabilities, max_cost):
            if c.excluded is None:
                return await self.profile(c.swarm_id)
        return None

    # -- admission --------------------------------------------------------------------------

    async def admit(self, swarm: SwarmRecord, task: Task) -> str | None:
        """Refuse a claim unless the swarm's breaker is closed, it has budget
        left (no budget set: unmetered) and it covers the task by the policy's
        threshold. (That the swarm is registered at all, the coordinator checks;
        so it does the coverage of its record against the policy's threshold,
        which :meth:`min_coverage` gives it: the policy is read here only when
        the governor's profile offers other capabilities than that record.)"""
        profile, breaker, budget = await asyncio.gather(
            self.profile(swarm.id), self.breaker(swarm.id), self.usable_budget(swarm.id))
        # A swarm the coordinator knows but the governor does not is unmetered,
        # judged on the capabilities it registered with the coordinator.
        if breaker.state is BreakerState.OPEN:
            return f"circuit breaker open: {breaker.reason}"
        if budget is not None and budget.exhausted:  # None: unmetered
            return "budget exhausted"
        if profile is None:
            return None
        policy = await self.policy()
        if set(profile.capabilities) != set(swarm.capabilities):
            cov = coverage(task.capabilities, profile.capabilities)
            if cov < float(policy.min_capability_match):
                return f"capability coverage {cov:.0%} below the policy's {policy.min_capability_match:.0%}"
        refusal = cost_refusal(profile, task, policy, budget)
        if refusal is not None and budget is not None and cost_refusal(profile, task, policy, None) is None:
            # refused only for what is left: holds of claims that never landed do not count
            stale = await self._stale_holds(swarm.id, budget)
            if stale:
                freed = sum(h.micros for h in stale.values())
                refusal = cost_refusal(profile, task, policy, budget.model_copy(update={
                    "reserved_micros": max(0, budget.reserved_micros - freed)}))
        return refusal

    async def hold(self, swarm: SwarmRecord, task: Task, claim_id: str) -> tuple[bool, str]:
        """Hold the claim's estimated cost (:func:`estimated_cost`) against
        the swarm's budget, in one compare-and-swap that refuses when what is
        left cannot cover it: so concurrent claims of one swarm, from any
        number of processes, never hold more than its budget. Holds of claims
        that never landed (their process died between the hold and the claim)
        are given back here when they stand in the way."""
        profile, budget = await asyncio.gather(self.profile(swarm.id), self.usable_budget(swarm.id))
        if profile is None or budget is None:
            return True, ""  # unmetered
        cost = estimated_cost(profile, task)
        if cost == 0:
            return True, ""
        held, left = await self._hold(swarm.id, claim_id, task.id, cost)
        if not held and await self._drop_stale_holds(swarm.id):
            held, left = await self._hold(swarm.id, claim_id, task.id, cost)
        if not held:
            return False, (f"estimated {format_usd(cost)} ({_hours(task)} at "
                           f"{format_usd(profile.cost_per_hour_micros)}/h) exceeds the {format_usd(left)} "
                           f"left in the budget of {swarm.id} (claims in progress hold part of it until "
                           "they end)")
        return True, f"held {format_usd(cost)} of the budget ({format_usd(left)} left beside it)"

    async def _hold(self, swarm_id: str, claim_id: str, task_id: str, cost: int) -> tuple[bool, int]:
        """One compare-and-swap: (held, what is left after it, or before if refused)."""
        outcome = (False, 0)

        def change(b: Budget | None) -> Budget | None:
            nonlocal outcome
            if b is None:
                outcome = (True, 0)
                return None
            if claim_id in b.holds:  # a retried compare-and-swap of the same attempt
                outcome = (True, b.remaining_micros)
                return None
            if b.remaining_micros < cost or len(b.holds) >= MAX_HOLDS:
                outcome = (False, b.remaining_micros)
                return None
            outcome = (True, b.remaining_micros - cost)
            return b.model_copy(update={
                "holds": {**b.holds, claim_id: Hold(task_id=task_id, micros=cost, at=self.clock())},
                "reserved_micros": b.reserved_micros + cost, "updated_at": self.clock()})

        # the copy admission read (watched, or this attempt's look) saves a round trip; a stale one
        # only loses the compare-and-swap, which then reads the record
        await self._budgets.mutate(swarm_id, change, first=await self._budgets.get(swarm_id))
        return outcome

    async def release(self, swarm_id: str, claim_id: str, task_id: str) -> None:
        """Give back what the claim ``claim_id`` still holds (what costs
        tracked for its task did not draw already)."""
        try:
            seen = await self._budgets.get(swarm_id)
        except CorruptRecordError:
            return  # nothing to give back to a record that does not read
        if seen is None or claim_id not in seen.value.holds:
            return  # nothing held: no write

        def change(b: Budget | None) -> Budget | None:
            if b is None or claim_id not in b.holds:
                return None
            holds = dict(b.holds)
            gone = holds.pop(claim_id)
            return b.model_copy(update={"holds": holds, "updated_at": self.clock(),
                                        "reserved_micros": max(0, b.reserved_micros - gone.micros)})

        await self._budgets.mutate(swarm_id, change, first=seen)

    async def _stale_holds(self, swarm_id: str, budget: Budget) -> dict[str, Hold]:
        """The holds of claims that are not on their task (older than
        :data:`HOLD_GRACE`, so never one whose claim is landing now): their
        process died between the hold and the claim, or before it gave the
        hold back. Reads those tasks; writes nothing."""
        now = self.clock()
        old = {cid: h for cid, h in budget.holds.items() if now - h.at > HOLD_GRACE}
        tasks = await asyncio.gather(*(self._tasks.read(h.task_id) for h in old.values()))
        return {cid: h for (cid, h), t in zip(old.items(), tasks, strict=True)
                if t is None or t.claim_id != cid or t.owner != swarm_id or t.status.value != "claimed"}

    async def _drop_stale_holds(self, swarm_id: str) -> bool:
        """Give back the holds :meth:`_stale_holds` finds; True if any was."""
        budget = await self.usable_budget(swarm_id)
        stale = {} if budget is None else await self._stale_holds(swarm_id, budget)
        for cid, h in stale.items():
            await self.release(swarm_id, cid, h.task_id)
        if stale:
            log.info("gave back %d holds of %s whose claims never landed or ended unnoticed",
                     len(stale), swarm_id)
        return bool(stale)

    async def validate_assignment(self, swarm_id: str, task: Task) -> list[str]:
        """Every policy the assignment of ``task`` to ``swarm_id`` would break
        (empty if none): unknown swarm, open breaker, coverage below the
        policy, estimated cost (cost per hour x estimate, 1 h if none) above
        ``max_cost_per_task`` or the task's own budget, or above what is left
        of the swarm's budget. Violations found are witnessed."""
        profile, breaker, budget, policy = await asyncio.gather(
            self.profile(swarm_id), self.breaker(swarm_id), self.budget(swarm_id), self.policy())
        if profile is None:
            return [f"swarm {swarm_id} has no governor profile"]
        problems = []
        if breaker.state is BreakerState.OPEN:
            problems.append(f"circuit breaker open: {breaker.reason}")
        cov = coverage(task.capabilities, profile.capabilities)
        if cov < float(policy.min_capability_match):
            problems.append(f"capability coverage {cov:.0%} below the policy's "
                            f"{policy.min_capability_match:.0%}")
        cost = estimated_cost(profile, task)
        if cost > policy.max_cost_per_task_micros:
            problems.append(f"estimated {format_usd(cost)} exceeds max_cost_per_task "
                            f"{format_usd(policy.max_cost_per_task_micros)}")
        if task.budget_micros is not None and cost > task.budget_micros:
            problems.append(f"estimated {format_usd(cost)} exceeds the task's budget "
                            f"{format_usd(task.budget_micros)}")
        if budget is not None and cost > budget.remaining_micros:
            problems.append(f"estimated {format_usd(cost)} exceeds the {format_usd(budget.remaining_micros)} "
                            "left in the swarm's budget")
        if problems:
            await self._notify("policy_violation", {"swarm_id": swarm_id, "task_id": task.id,
                                                    "problems": problems})
        return problems

    async def route(self, task: Task, swarms: list[SwarmRecord], threshold: float | None = None) -> list[str]:
        """Who a task is pushed to: qualified swarms only (coverage by the
        policy's threshold, breaker closed, budget left, its estimated cost
        within the policy's and the task's caps and the budget), best score
        first."""
        registered = {s.id for s in swarms}
        return [c.swarm_id for c in await self.explain_match(task.capabilities, among=registered, task=task)
                if c.excluded is None and c.swarm_id in registered]

    async def request_help_for_blocker(self, blocked_swarm_id: str, blocker: dict[str, Any], *,
                                       task: Task | None = None) -> dict[str, Any]:
        """The seeds' "gang up on blocker": for each capability the blocker
        needs, the best qualified swarm (not the blocked one), at most
        ``max_swarms_per_task`` of them, each within ``max_cost_per_task`` for
        the task's estimate (1 h if none), a swarm with an agent connected or
        waiting for work before any other; they are sent a help request on
        ``swarms/<id>/help``. When nobody qualifies, a human is asked on the
        escalation subject. ``task``: the blocked task, if the caller read it
        already (else it is read here, when the report names one). Returns the plan."""
        info = blocker.get("blocker_info", blocker)
        hours = Decimal("1")
        task_id = info.get("task") or info.get("task_id")
        if task is None and isinstance(task_id, str) and task_id:
            task = await self._tasks.read(task_id)
        if task is not None:
            hours = task.estimate_hours or hours
        text = " ".join(str(info.get(k) or "") for k in ("message", "description", "reason"))
        # the inference rules load YAML: imported here, off the start-up of every command
        from infrafabric.coordinator.infer import blocker_needs

        needed, needed_from = blocker_needs(list(info.get("capabilities") or []), task, text)
        if info.get("capabilities") and isinstance(info.get("capabilities_from"), str):
            needed_from = info["capabilities_from"][:500]  # the reporter worked them out by the same rule
        policy, connected, waiting = await asyncio.gather(self.policy(), self._presence.list(),
                                                          self._waiting.list())
        # a help request reaches only a swarm whose agent listens: the live ones are asked first
        live = {sid for sid, state in judge_liveness(
            (), presence=[v.value for v in connected], waiting=[v.value for v in waiting], tasks=(),
            now=self.clock()).items() if state.live}
        helpers: list[dict[str, Any]] = []
        skipped: list[str] = []
        for cap in needed or [""]:
            if len(helpers) >= policy.max_swarms_per_task:
                skipped.append(f"{cap}: max_swarms_per_task ({policy.max_swarms_per_task}) reached")
                continue
            taken = {h["swarm_id"] for h in helpers} | {blocked_swarm_id}
            matches = await self.explain_match([cap] if cap else [])
            for c in sorted(matches, key=lambda c: c.swarm_id not in live):  # stable: by score within each
                if c.excluded is not None or c.swarm_id in taken:
                    continue
                profile = await self.profile(c.swarm_id)
                if profile is None:
                    continue
                cost = int(profile.cost_per_hour_micros * hours)
                if cost > policy.max_cost_per_task_micros:
                    skipped.append(f"{c.swarm_id}: {format_usd(cost)} for {hours} h exceeds "
                                   f"max_cost_per_task {format_usd(policy.max_cost_per_task_micros)}")
                    await self._notify("policy_violation_avoided", {
                        "swarm_id": c.swarm_id, "rule": "max_cost_per_task", "cost_micros": cost})
                    continue
                helpers.append({"swarm_id": c.swarm_id, "capability": cap, "estimated_cost_micros": cost,
                                "live": c.swarm_id in live})
                break
        plan = {"blocked_swarm_id": blocked_swarm_id, "task": task_id, "needed": needed,
                "needed_from": needed_from, "helpers": helpers, "skipped": skipped, "escalated": not helpers}
        request = json.dumps({"type": "help_request", **plan, "blocker": info}, default=str)
        for h in helpers:
            await self.bus.publish(help_subject(h["swarm_id"]), request)
        if not helpers:
            await self.escalate({"type": "human_needed", "reason": "no qualified swarm can help", **plan})
        await self._notify("help_requested" if helpers else "escalated_to_human",
                           {"swarm_id": blocked_swarm_id, "helpers": [h["swarm_id"] for h in helpers],
                            "needed": needed})
        return plan

    # -- the coordinator's claim policy ------------------------------------------------

    async def min_coverage(self, default: float) -> float:
        """The policy's ``min_capability_match`` (one threshold on the bus for the fleet)."""
        return await self.min_capability_match()

    async def push_fanout(self, default: int) -> int:
        """The policy's ``push_fanout``."""
        return (await self.policy()).push_fanout

    async def prepare(self, swarm_id: str) -> None:
        """What :meth:`admit` reads, read at once as a hand-out starts (within
        its one look, each is read once)."""
        await asyncio.gather(self.profile(swarm_id), self.breaker(swarm_id), self.usable_budget(swarm_id),
                             self.policy())

    async def stopped(self, swarm_id: str) -> SwarmStoppedError | None:
        """Breaker open or budget spent: the swarm may claim nothing until a human acts."""
        breaker, budget = await asyncio.gather(self.breaker(swarm_id), self.usable_budget(swarm_id))
        if breaker.state is BreakerState.OPEN:
            return BreakerOpenError(f"circuit breaker of {swarm_id} is open: {breaker.reason}",
                                    swarm_id=swarm_id,
                                    hint=f"ifctl governor reset-circuit-breaker {swarm_id} --budget USD")
        if budget is not None and budget.exhausted:  # None: unmetered
            return BudgetExhaustedError(
                f"budget of {swarm_id} is exhausted: {format_usd(budget.spent_micros)} spent "
                f"(+{format_usd(budget.reserved_micros)} reserved) of {format_usd(budget.limit_micros)}",
                swarm_id=swarm_id, hint=f"ifctl governor reset-circuit-breaker {swarm_id} --budget USD")
        return None

    async def on_blocker(self, swarm_id: str, report: dict[str, Any], task: Task | None) -> Any:
        return await self.request_help_for_blocker(swarm_id, report, task=task)

    async def on_outcome(self, swarm_id: str, task: Task, *, success: bool) -> None:
        await self.record_outcome(swarm_id, success=success)

    async def _notify(self, operation: str, params: dict[str, Any]) -> None:
        for observer in self.observers:
            await observer(operation, params)


def estimated_cost(profile: SwarmProfile, task: Task) -> int:
    """What a claim of ``task`` by the swarm of ``profile`` is estimated to
    cost: its cost per hour x the task's estimate (1 h when it has none), in
    micro-dollars (rounded down; exact Decimal arithmetic)."""
    return int(profile.cost_per_hour_micros * (task.estimate_hours or Decimal("1")))


def cost_refusal(profile: SwarmProfile, task: Task, policy: ResourcePolicy,
                 budget: Budget | None) -> str | None:
    """Why the policy refuses ``task`` to the swarm of ``profile`` on cost:
    its estimate above ``max_cost_per_task``, the task's own budget, or what
    is left of the swarm's budget (None: unmetered); None if it may."""
    cost = estimated_cost(profile, task)
    how = f"estimated {format_usd(cost)} ({_hours(task)} at {format_usd(profile.cost_per_hour_micros)}/h)"
    if cost > policy.max_cost_per_task_micros:
        return f"{how} exceeds max_cost_per_task {format_usd(policy.max_cost_per_task_micros)}"
    if task.budget_micros is not None and cost > task.budget_micros:
        return f"{how} exceeds the task's budget {format_usd(task.budget_micros)}"
    if budget is not None and cost > budget.remaining_micros:
        return f"{how} exceeds the {format_usd(budget.remaining_micros)} left in the swarm's budget"
    return None


def _hours(task: Task) -> str:
    if task.estimate_hours is None:
        return "1 h, no estimate given"
    return f"{task.estimate_hours.normalize():f} h"


def _draw(holds: dict[str, Hold], task_id: str, cost: int) -> tuple[dict[str, Hold], int]:
    """Take up to ``cost`` from the holds on ``task_id``: (the holds after, what was taken)."""
    out, drawn = dict(holds), 0
    for cid, h in holds.items():
        if h.task_id == task_id and drawn < cost and h.micros:
            take = min(h.micros, cost - drawn)
            out[cid] = h.model_copy(update={"micros": h.micros - take})
            drawn += take
    return out, drawn


def _check_micros(amount: object, what: str) -> None:
    """An amount of money given to the library: an int of micro-dollars within bounds."""
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= MAX_MICROS:
        shown = repr(amount) if len(repr(amount)) <= 40 else repr(amount)[:37] + "..."
        raise ConfigurationError(f"{what} must be an integer of micro-dollars within 0..{MAX_MICROS:,} "
                                 f"($1,000,000,000), got {shown}")


def _post_json(url: str, body: bytes, timeout: float) -> int:
    import urllib.request  # only a webhook needs it: off the start-up of every command

    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "infrafabric-governor"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)


def parse_profile(data: dict[str, Any]) -> SwarmProfile:
    try:
        return SwarmProfile.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError("invalid swarm profile: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
