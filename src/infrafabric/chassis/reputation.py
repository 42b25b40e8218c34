"""SLO-based reputation (the seeds' P0.3.5), kept on the bus and fed to the governor.

**Formula** (exact rational arithmetic, rounded half-even to 0.0001 once at
the end), over the SLO window of :class:`~infrafabric.chassis.slo.SLOTracker`::

    reputation = 1
                 x 0.8           if the success-rate objective is not met
                 x 0.9           if the p99-latency objective is not met
                 x success_rate  (successes / samples)

A swarm with no sample in the window gets 1.0 (benefit of the doubt).
Availability is not a factor of its own: an unavailable sample is never a
success, so it already lowers the success rate.

**Decay** (optional, ``decay_half_life_seconds``): when the window holds no
sample, the last evidence-based reputation ``r`` (computed at ``t``) relaxes
towards the neutral 1.0 instead of jumping back to it:
``1 - (1 - r) x 2^(-(now - t) / half_life)``. Fresh samples always win over
decay. Without decay, an empty window gives 1.0 at once, as in the seeds.

Layout on the bus:

* ``chassis/reputation/<swarm>/current`` — the latest :class:`ReputationRecord`
  (compare-and-swap; an older evaluation never overwrites a newer one)
* ``chassis/reputation/<swarm>/h/<time µs, 20 digits>-<random>`` — every
  evaluation, written once (the history)

Each evaluation is handed to ``sink(swarm_id, value)``; pass the governor's
``set_reputation`` so matching prefers swarms that deliver. A sink that raises
:class:`~infrafabric.errors.NotFoundError` (a swarm the governor does not
know) is reported as ``reputation_sink_skipped`` and otherwise ignored.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction
from secrets import token_hex
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from infrafabric.bus import EventBus
from infrafabric.bus.layout import REPUTATION
from infrafabric.bus.records import Records
from infrafabric.chassis.slo import (
    Compliance,
    Observer,
    SLOTracker,
    check_swarm_id,
    fraction_to_decimal,
    prune_records,
)
from infrafabric.errors import ConfigurationError, CorruptRecordError, NotFoundError

__all__ = [
    "NEUTRAL",
    "REPUTATION_PREFIX",
    "ReputationRecord",
    "ReputationSystem",
    "reputation_from_compliance",
]

REPUTATION_PREFIX = REPUTATION
NEUTRAL = Decimal("1.0000")
_PLACES = Decimal("0.0001")
_CTX = Context(prec=34)
Sink = Callable[[str, Decimal], Awaitable[Any]]


def reputation_from_compliance(c: Compliance) -> Decimal:
    """The seeds' formula (see the module docs), exact until the final rounding."""
    rate = c.success_rate
    if rate is None:
        return NEUTRAL
    value = Fraction(1)
    if not c.success_rate_compliant:
        value *= Fraction(8, 10)
    if not c.p99_latency_compliant:
        value *= Fraction(9, 10)
    return fraction_to_decimal(value * rate)


class ReputationRecord(BaseModel):
    """One evaluation of a swarm's reputation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    swarm_id: str
    reputation: Decimal
    at: float
    samples: int
    successes: int
    violations: list[str]
    decayed: bool = False
    #: the last reputation computed from samples, and when (what decay starts from)
    evidence_reputation: Decimal | None = None
    evidence_at: float | None = None


class ReputationSystem:
    """Computes, stores and publishes SLO-based reputation (0-1, 4 places).

    ``bus`` defaults to the tracker's; ``clock`` to the tracker's clock.
    """

    def __init__(self, tracker: SLOTracker, *, bus: EventBus | None = None, sink: Sink | None = None,
                 observers: Iterable[Observer] = (), decay_half_life_seconds: float | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if decay_half_life_seconds is not None and (
                isinstance(decay_half_life_seconds, bool)
                or not isinstance(decay_half_life_seconds, int | float)
                or not math.isfinite(decay_half_life_seconds) or decay_half_life_seconds <= 0):
            raise ConfigurationError(
                f"decay_half_life_seconds must be a positive number, got {decay_half_life_seconds!r}")
        self.tracker = tracker
        self.bus = bus if bus is not None else tracker.bus
        self._current = Records(self.bus, REPUTATION_PREFIX, ReputationRecord)
        self.sink = sink
        self.observers = list(observers)
        self.decay_half_life_seconds = decay_half_life_seconds
        self.clock = clock if clock is not None else tracker.clock

    async def record_task(self, swarm_id: str, latency_ms: float | None, success: bool, *,
                          available: bool = True, task_id: str | None = None,
                          reason: str | None = None) -> Decimal:
        """Record one finished task's sample, then recompute (and publish) the
        swarm's reputation: "reputation updated after each task"."""
        await self.tracker.record_metric(swarm_id, latency_ms, success, available=available,
                                         task_id=task_id, reason=reason)
        return await self.calculate_reputation(swarm_id)

    async def calculate_reputation(self, swarm_id: str) -> Decimal:
        """Evaluate ``swarm_id`` now (see the module docs), store the result
        in the history and as current, and hand it to the sink."""
        compliance = await self.tracker.calculate_slo_compliance(swarm_id)
        now = self.clock()
        previous = await self.current(swarm_id)
        decayed = False
        if compliance.samples:
            value = reputation_from_compliance(compliance)
            evidence: tuple[Decimal | None, float | None] = (value, now)
        else:
            evidence = (None, None) if previous is None else (previous.evidence_reputation,
                                                              previous.evidence_at)
            value = NEUTRAL
            if self.decay_half_life_seconds is not None and evidence[0] is not None \
                    and evidence[1] is not None:
                value = self._decay(evidence[0], now - evidence[1])
                decayed = value != NEUTRAL
        record = ReputationRecord(
            swarm_id=swarm_id, reputation=value, at=now, samples=compliance.samples,
            successes=compliance.successes, violations=compliance.violations, decayed=decayed,
            evidence_reputation=evidence[0], evidence_at=evidence[1])
        body = record.model_dump_json()
        prefix = f"{REPUTATION_PREFIX}{swarm_id}/h/{int(now * 1_000_000):020d}-"
        while await self.bus.create(prefix + token_hex(4), body) is None:
            pass
        await self._store_current(record)
        if previous is None or previous.reputation != value:
            await self._notify("reputation_updated", {
                "swarm_id": swarm_id, "reputation": str(value),
                "previous": None if previous is None else str(previous.reputation),
                "samples": compliance.samples, "violations": compliance.violations, "decayed": decayed})
        if self.sink is not None:
            try:
                await self.sink(swarm_id, value)
            except NotFoundError as exc:
                await self._notify("reputation_sink_skipped", {"swarm_id": swarm_id, "reason": exc.message})
        return value

    async def get_reputation(self, swarm_id: str) -> Decimal:
        """The last stored reputation (1.0 for a swarm never evaluated)."""
        record = await self.current(swarm_id)
        return NEUTRAL if record is None else record.reputation

    async def current(self, swarm_id: str) -> ReputationRecord | None:
        """The latest evaluation, or None."""
        got = await self._read_current(swarm_id)
        return None if got is None else got[0]

    async def history(self, swarm_id: str, *, limit: int | None = None) -> list[ReputationRecord]:
        """Every stored evaluation, oldest first (by time, then by bus revision);
        the last ``limit`` if given."""
        found: list[tuple[float, int, ReputationRecord]] = []
        async for entry in self.bus.scan(f"{REPUTATION_PREFIX}{check_swarm_id(swarm_id)}/h/"):
            try:
                record = ReputationRecord.model_validate_json(entry.value)
            except ValidationError:
                continue
            found.append((record.at, entry.revision, record))
        found.sort(key=lambda f: f[:2])
        out = [f[2] for f in found]
        return out if limit is None else out[-limit:] if limit > 0 else []

    async def prune_history(self, swarm_id: str, *, before: float) -> int:
        """Delete the history entries at or before ``before``; return how many."""
        return await prune_records(self.bus, f"{REPUTATION_PREFIX}{check_swarm_id(swarm_id)}/h/",
                                   lambda data: ReputationRecord.model_validate_json(data).at, before)

    # -- internals ------------------------------------------------------------------

    def _decay(self, reputation: Decimal, elapsed: float) -> Decimal:
        assert self.decay_half_life_seconds is not None
        half_life = Decimal(repr(float(self.decay_half_life_seconds)))
        exponent = _CTX.divide(Decimal(repr(max(float(elapsed), 0.0))), half_life)
        factor = _CTX.power(Decimal(2), _CTX.minus(exponent))
        value = _CTX.subtract(Decimal(1), _CTX.multiply(_CTX.subtract(Decimal(1), reputation), factor))
        return min(max(value, Decimal(0)), Decimal(1)).quantize(_PLACES, rounding=ROUND_HALF_EVEN)

    async def _read_current(self, swarm_id: str) -> tuple[ReputationRecord, int] | None:
        try:
            got = await self._current.get(f"{check_swarm_id(swarm_id)}/current")
        except CorruptRecordError:
            return None  # shown as no reputation yet; the next evaluation replaces it
        return None if got is None else (got.value, got.revision)

    async def _store_current(self, record: ReputationRecord) -> None:
        # newest evaluation wins: one that took longer than a later one does not overwrite it
        await self._current.mutate(f"{record.swarm_id}/current",
                                   lambda stored: None if stored is not None and stored.at > record.at
                                   else record)

    async def _notify(self, operation: str, params: dict[str, Any]) -> None:
        for observer in self.observers:
            await observer(operation, params)
