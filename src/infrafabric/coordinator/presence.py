"""Who is live: the one rule every front end applies to tell live agents from dead ones.

A swarm is *live* while any of these holds on the bus:

- an agent of it is connected (a fresh ``presence/<swarm>`` mark: an
  ``ifctl mcp`` session refreshes it every ``ttl / 3`` seconds);
- an agent of it waits for work (a fresh ``waiting/<swarm>`` mark: a waiting
  ``next_task`` or an open ``pushed_tasks`` feed);
- it holds a claim whose lease has not lapsed (its agent's heartbeats renew it).

A mark is fresh while ``seen_at + ttl`` has not passed: a process that dies
stops refreshing it, so a dead agent goes dead within one ``ttl`` without
anyone deleting anything. Everything else registered is *dead*.

*Unattended* work is what the fleet should be told about: an available task
that no live swarm qualified to take it (covering its capabilities by the
policy's threshold, and not refused by its breaker or budget) could claim now.
These functions are pure: :meth:`IFCoordinator.liveness` feeds them what it
reads from the bus, the dashboard what its watches keep.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from infrafabric.coordinator.models import Presence, Task, TaskStatus, coverage

__all__ = ["Liveness", "liveness", "unattended"]


@dataclass(frozen=True)
class Liveness:
    """Whether a swarm is live now, and what says so."""

    swarm_id: str
    live: bool
    #: what makes it live, e.g. ``"connected via mcp on host (pid 42)"``; empty when dead
    because: list[str] = field(default_factory=list)
    #: the latest moment any agent of it was seen (a mark's refresh), if ever
    last_seen: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {"live": self.live, "because": list(self.because), "last_seen": self.last_seen}

    @staticmethod
    def of(state: Liveness | None) -> dict[str, object]:
        """:meth:`as_dict` of ``state``; None (a swarm no mark or claim names)
        is dead, never seen."""
        return state.as_dict() if state is not None else {"live": False, "because": [], "last_seen": None}


def _fresh(mark: Presence, now: float) -> bool:
    return mark.seen_at + mark.ttl >= now


def liveness(swarm_ids: Iterable[str], *, presence: Iterable[Presence], waiting: Iterable[Presence],
             tasks: Iterable[Task], now: float) -> dict[str, Liveness]:
    """The liveness of every swarm in ``swarm_ids`` (and of any other swarm a
    mark or a claim names), from the presence and waiting marks and the
    board's claims, at ``now``."""
    because: dict[str, list[str]] = {sid: [] for sid in swarm_ids}
    seen: dict[str, float] = {}
    for kind, marks in (("connected", presence), ("waiting for work", waiting)):
        for m in marks:
            seen[m.swarm_id] = max(seen.get(m.swarm_id, m.seen_at), m.seen_at)
            if _fresh(m, now):
                because.setdefault(m.swarm_id, []).append(f"{kind} via {m.via} on {m.host} (pid {m.pid})")
    for t in tasks:
        if t.status is TaskStatus.CLAIMED and t.owner and t.lease_until is not None and t.lease_until >= now:
            because.setdefault(t.owner, []).append(f"holds {t.id}")
    return {sid: Liveness(sid, bool(why), why, seen.get(sid)) for sid, why in because.items()}


def unattended(tasks: Iterable[Task], capabilities: Mapping[str, Collection[str]], live: Collection[str], *,
               threshold: float, refused: Collection[str] = ()) -> list[Task]:
    """The available tasks no live swarm could take: none of ``live`` (less
    ``refused``) covers its capabilities by ``threshold``. ``capabilities``
    maps each swarm to what it offers."""
    able = [list(capabilities.get(sid, ())) for sid in live if sid not in refused]
    return [t for t in tasks if t.status is TaskStatus.AVAILABLE
            and not any(coverage(list(t.capabilities), offered) >= threshold for offered in able)]
