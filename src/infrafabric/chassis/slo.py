"""SLO tracking on the bus: one immutable sample per task, compliance over a window.

Layout on the bus:

* ``chassis/slo/<swarm>/objective`` — the swarm's :class:`ServiceLevelObjective`
* ``chassis/slo/<swarm>/s/<time µs, 20 digits>-<random>`` — one :class:`Sample`,
  written once with ``create``; any number of processes record concurrently
  without a read-modify-write
* ``chassis/slo/<swarm>/status`` — the violations last seen, changed by
  compare-and-swap so exactly one evaluator reports each change

**Definitions** (over the samples with ``at > now - window_seconds``):

* ``success_rate`` = successful samples / all samples, an exact
  :class:`~fractions.Fraction`;
* ``availability`` = samples recorded with ``available=True`` / all samples;
* ``p99_latency_ms`` = nearest-rank 99th percentile of the samples that carry a
  latency: sort them ascending, take the one at 1-based rank ``ceil(0.99 n)``
  (n = 1 gives the only value, n = 100 the 99th smallest, n = 101 the 100th).

With no sample in the window nothing is violated: every flag is true and the
rates are ``None``. A swarm without a stored objective is judged by the
defaults of :class:`ServiceLevelObjective`.

A compliance evaluation whose set of violated objectives differs from the
stored status reports ``slo_violation`` (objectives newly violated) and/or
``slo_recovered`` (objectives met again) to the observers.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from secrets import token_hex
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infrafabric.bus import EventBus
from infrafabric.bus.layout import SLO
from infrafabric.bus.records import Records
from infrafabric.chassis.models import ServiceLevelObjective
from infrafabric.coordinator.models import TASK_ID_PATTERN
from infrafabric.errors import ConfigurationError

__all__ = [
    "SLO_PREFIX",
    "Compliance",
    "SLOTracker",
    "Sample",
    "fraction_to_decimal",
    "p99_nearest_rank",
    "prune_records",
]

SLO_PREFIX = SLO
#: ``async (operation, params) -> None``, e.g. ``Witness.observer("IF.chassis")``
Observer = Callable[[str, dict[str, Any]], Awaitable[None]]
_NAME = re.compile(TASK_ID_PATTERN)
_FLAGS = ("success_rate", "p99_latency", "availability")


def check_swarm_id(swarm_id: str) -> str:
    """Return ``swarm_id`` if it is a valid id, else raise :class:`ConfigurationError`."""
    if not isinstance(swarm_id, str) or _NAME.fullmatch(swarm_id) is None:
        raise ConfigurationError(f"invalid swarm_id {swarm_id!r}")
    return swarm_id


def p99_nearest_rank(latencies: Iterable[float]) -> float | None:
    """The nearest-rank 99th percentile (see the module docs); None if empty."""
    ordered = sorted(latencies)
    if not ordered:
        return None
    rank = (99 * len(ordered) + 99) // 100  # ceil(0.99 n), exactly
    return ordered[rank - 1]


def fraction_to_decimal(value: Fraction, places: int = 4) -> Decimal:
    """``value`` rounded half-even to ``places`` decimal places, exactly."""
    scale = 10**places
    return Decimal(round(value * scale)).scaleb(-places)


class Sample(BaseModel):
    """One measurement: a task's latency (None if it never ran) and outcome."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: float
    latency_ms: float | None = Field(default=None, ge=0)
    success: bool
    available: bool = True
    task_id: str | None = None
    reason: str | None = None


class _Status(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    violations: list[str]
    at: float


@dataclass(frozen=True)
class Compliance:
    """How a swarm did against its objective over the window ending at ``evaluated_at``."""

    swarm_id: str
    slo: ServiceLevelObjective
    evaluated_at: float
    samples: int
    successes: int
    available_samples: int
    latency_samples: int
    p99_latency_ms: float | None

    @property
    def success_rate(self) -> Fraction | None:
        """Successes / samples, exactly; None with no samples."""
        return Fraction(self.successes, self.samples) if self.samples else None

    @property
    def availability(self) -> Fraction | None:
        """Available samples / samples, exactly; None with no samples."""
        return Fraction(self.available_samples, self.samples) if self.samples else None

    @property
    def success_rate_compliant(self) -> bool:
        rate = self.success_rate
        return rate is None or rate >= Fraction(self.slo.success_rate)

    @property
    def availability_compliant(self) -> bool:
        rate = self.availability
        return rate is None or rate >= Fraction(self.slo.availability)

    @property
    def p99_latency_compliant(self) -> bool:
        return self.p99_latency_ms is None or self.p99_latency_ms <= self.slo.p99_latency_ms

    @property
    def overall_compliant(self) -> bool:
        return self.success_rate_compliant and self.p99_latency_compliant and self.availability_compliant

    @property
    def violations(self) -> list[str]:
        """The objectives not met: a subset of ``success_rate``, ``p99_latency``, ``availability``."""
        flags = (self.success_rate_compliant, self.p99_latency_compliant, self.availability_compliant)
        return [name for name, ok in zip(_FLAGS, flags, strict=True) if not ok]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (rates as 4-place decimal strings plus exact counts)."""
        sr, av = self.success_rate, self.availability
        return {
            "swarm_id": self.swarm_id, "evaluated_at": self.evaluated_at,
            "window_seconds": self.slo.window_seconds, "samples": self.samples,
            "successes": self.successes, "available_samples": self.available_samples,
            "success_rate": None if sr is None else str(fraction_to_decimal(sr)),
            "success_rate_target": str(self.slo.success_rate),
            "success_rate_compliant": self.success_rate_compliant,
            "p99_latency_ms": self.p99_latency_ms, "p99_latency_target_ms": self.slo.p99_latency_ms,
            "p99_latency_compliant": self.p99_latency_compliant,
            "availability": None if av is None else str(fraction_to_decimal(av)),
            "availability_target": str(self.slo.availability),
            "availability_compliant": self.availability_compliant,
            "overall_compliant": self.overall_compliant, "violations": self.violations,
        }


class SLOTracker:
    """Records samples and judges compliance, all on the bus (the seeds' P0.3.4).

    Every process's tracker sees the same samples; ``clock`` (seconds) stamps
    samples and ends the window, so tests can inject time.
    """

    def __init__(self, bus: EventBus, *, observers: Iterable[Observer] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.bus = bus
        self._status = Records(bus, SLO_PREFIX, _Status)
        self.observers = list(observers)
        self.clock = clock

    # -- objectives -----------------------------------------------------------------

    async def set_slo(self, swarm_id: str, slo: ServiceLevelObjective, *, by: str | None = None) -> None:
        """Store the objective ``swarm_id`` is judged by."""
        check_swarm_id(swarm_id)
        if not isinstance(slo, ServiceLevelObjective):
            raise ConfigurationError(f"slo must be a ServiceLevelObjective, got {type(slo).__name__}")
        await self.bus.put(f"{SLO_PREFIX}{swarm_id}/objective", slo.model_dump_json())
        await self._notify("slo_set", {"swarm_id": swarm_id, "slo": slo.model_dump(mode="json"), "by": by})

    async def slo(self, swarm_id: str) -> ServiceLevelObjective:
        """The stored objective, or the defaults if none was set."""
        entry = await self.bus.get(f"{SLO_PREFIX}{check_swarm_id(swarm_id)}/objective")
        return ServiceLevelObjective() if entry is None else ServiceLevelObjective.model_validate_json(
            entry.value)

    async def has_slo(self, swarm_id: str) -> bool:
        """Whether an objective was stored for ``swarm_id``."""
        return await self.bus.get(f"{SLO_PREFIX}{check_swarm_id(swarm_id)}/objective") is not None

    # -- samples --------------------------------------------------------------------

    async def record_metric(self, swarm_id: str, latency_ms: float | None, success: bool, *,
                            available: bool = True, task_id: str | None = None,
                            reason: str | None = None) -> Sample:
        """Record one task's outcome as its own sample on the bus.

        ``latency_ms`` is None for a task that never ran; ``available=False``
        records that the swarm could not run at all (which cannot be a success)."""
        check_swarm_id(swarm_id)
        if latency_ms is not None and (isinstance(latency_ms, bool) or not isinstance(latency_ms, int | float)
                                       or not math.isfinite(latency_ms) or latency_ms < 0):
            raise ConfigurationError(f"latency_ms must be a finite number >= 0 or None, got {latency_ms!r}")
        if not isinstance(success, bool) or not isinstance(available, bool):
            raise ConfigurationError("success and available must be booleans")
        if success and not available:
            raise ConfigurationError("a sample cannot be a success when the swarm was unavailable")
        sample = Sample(at=self.clock(), latency_ms=None if latency_ms is None else float(latency_ms),
                        success=success, available=available, task_id=task_id, reason=reason)
        body = sample.model_dump_json()
        prefix = f"{SLO_PREFIX}{swarm_id}/s/{int(sample.at * 1_000_000):020d}-"
        while await self.bus.create(prefix + token_hex(4), body) is None:
            pass
        return sample

    async def samples(self, swarm_id: str, *, since: float | None = None) -> list[Sample]:
        """The stored samples of ``swarm_id`` (those with ``at > since`` if
        given), oldest first (by time, then by bus revision). Unreadable
        records are skipped."""
        found: list[tuple[float, int, Sample]] = []
        async for entry in self.bus.scan(f"{SLO_PREFIX}{check_swarm_id(swarm_id)}/s/"):
            try:
                sample = Sample.model_validate_json(entry.value)
            except ValidationError:
                continue
            if since is None or sample.at > since:
                found.append((sample.at, entry.revision, sample))
        found.sort(key=lambda f: f[:2])
        return [f[2] for f in found]

    async def prune(self, swarm_id: str, *, before: float | None = None) -> int:
        """Delete the samples at or before ``before`` (default: those outside
        the objective's window now); return how many."""
        if before is None:
            before = self.clock() - (await self.slo(swarm_id)).window_seconds
        return await prune_records(self.bus, f"{SLO_PREFIX}{check_swarm_id(swarm_id)}/s/",
                                   lambda data: Sample.model_validate_json(data).at, before)

    async def swarms(self) -> list[str]:
        """Every swarm with an objective or samples (scans every sample key)."""
        found: set[str] = set()
        async for entry in self.bus.scan(SLO_PREFIX):
            found.add(entry.key[len(SLO_PREFIX):].split("/", 1)[0])
        return sorted(found)

    # -- compliance -----------------------------------------------------------------

    async def calculate_slo_compliance(self, swarm_id: str) -> Compliance:
        """Judge ``swarm_id`` against its objective over the window ending now
        (see the module docs); report a change of violations to the observers."""
        slo = await self.slo(swarm_id)
        now = self.clock()
        window = await self.samples(swarm_id, since=now - slo.window_seconds)
        latencies = [s.latency_ms for s in window if s.latency_ms is not None]
        compliance = Compliance(
            swarm_id=swarm_id, slo=slo, evaluated_at=now, samples=len(window),
            successes=sum(s.success for s in window), available_samples=sum(s.available for s in window),
            latency_samples=len(latencies), p99_latency_ms=p99_nearest_rank(latencies))
        await self._report(compliance)
        return compliance

    async def _report(self, c: Compliance) -> None:
        now_violated = c.violations
        before: list[str] = []
        changed = False

        def change(status: _Status | None) -> _Status | None:
            nonlocal before, changed
            before = status.violations if status else []
            # a change of state is witnessed once across the fleet: only the writer that makes it reports it
            newer = status is not None and status.at > c.evaluated_at
            changed = not (set(before) == set(now_violated) or newer)
            return _Status(violations=now_violated, at=c.evaluated_at) if changed else None

        await self._status.mutate(f"{c.swarm_id}/status", change)
        if not changed:
            return
        summary = c.as_dict()
        new = [v for v in now_violated if v not in before]
        met = [v for v in before if v not in now_violated]
        if new:
            await self._notify("slo_violation", {**summary, "newly_violated": new})
        if met:
            await self._notify("slo_recovered", {**summary, "recovered": met})

    async def _notify(self, operation: str, params: dict[str, Any]) -> None:
        for observer in self.observers:
            await observer(operation, params)


async def prune_records(bus: EventBus, prefix: str, time_of: Callable[[bytes], float], before: float) -> int:
    """Delete the records under ``prefix`` stamped at or before ``before``
    (and unreadable ones); return how many went. A record changed meanwhile
    is left (the delete is conditional on the revision read)."""
    removed = 0
    async for entry in bus.scan(prefix):
        try:
            old = time_of(entry.value) <= before
        except ValidationError:
            old = True
        if old and await bus.delete(entry.key, entry.revision):
            removed += 1
    return removed
