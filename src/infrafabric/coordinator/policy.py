"""``ClaimPolicy``: what a coordinator asks before it hands work out.

A coordinator decides *who owns a task* by compare-and-swap; a claim policy
decides *who may*: whether a swarm is stopped, whether a claim is admitted,
which swarms an available task is pushed to, what a claim holds of a
budget while it lasts, what a blocker brings, and what a finished attempt
counts for. It is given to the coordinator at
construction (``IFCoordinator(bus, policy=...)``) and is consulted on every
path that hands work out (claim, hand-out, push after creation, completion,
release, failure, reopening and lease expiry), so no path can skip it.

This base class is the *open* policy of a bare coordinator: every registered
swarm that covers a task by the coordinator's ``min_coverage`` may claim it
and is pushed it; nothing is metered. The governor
(:class:`~infrafabric.governor.IFGovernor`) is the policy the assembly
(:func:`infrafabric.open_fleet`) installs: breakers, budgets, scoring and the
policy's threshold.
"""

from __future__ import annotations

from typing import Any

from infrafabric.coordinator.models import SwarmRecord, Task, coverage
from infrafabric.errors import SwarmStoppedError

__all__ = ["ClaimPolicy"]


class ClaimPolicy:
    """The open policy; subclass and override to govern (see the module docs).

    Every method is called on the coordinator's event loop and may do bus I/O;
    an exception raised by one fails the operation that asked (a claim, a
    push), so a policy that cannot decide should say so by raising.
    """

    #: a short name for ``--why`` ("open", "governor")
    name = "open"

    async def follow(self) -> None:
        """Called when the coordinator's watcher starts (a long-lived
        process): a policy may keep what it reads live from here on, by
        watches, instead of reading it for each claim."""

    async def unfollow(self) -> None:
        """Called when the coordinator's watcher stops."""

    async def min_coverage(self, default: float) -> float:
        """The share of a task's required capabilities a swarm must offer to
        claim it or be pushed it (``default``: the coordinator's own)."""
        return default

    async def push_fanout(self, default: int) -> int:
        """How many waiting agents a task that becomes available is pushed to
        at once (``default``: the coordinator's own)."""
        return default

    async def prepare(self, swarm_id: str) -> None:
        """Called as a hand-out for ``swarm_id`` starts, at the same time as
        :meth:`stopped`, inside one :func:`~infrafabric.bus.records.one_look`:
        a policy may read here, all at once, what :meth:`admit` will need, so
        the claim does not wait for those reads one after the other."""

    async def stopped(self, swarm_id: str) -> SwarmStoppedError | None:
        """Why the swarm may claim nothing at all now (breaker open, budget
        spent), or None. The hand-out raises it instead of waiting for work
        that would be refused anyway."""
        return None

    async def admit(self, swarm: SwarmRecord, task: Task) -> str | None:
        """A reason to refuse this claim (after availability and coverage
        were checked), or None to admit it."""
        return None

    async def hold(self, swarm: SwarmRecord, task: Task, claim_id: str) -> tuple[bool, str]:
        """Hold what the claim ``claim_id`` of ``task`` may cost, before the
        claim's compare-and-swap: ``(True, note)`` when held (``note`` says
        what), ``(True, "")`` when nothing needed holding (then
        :meth:`release` is not called for a refused attempt), ``(False,
        reason)`` to refuse the claim, holding nothing. Called once an attempt is admitted; may be
        called again for the same ``claim_id`` (a retried compare-and-swap)
        and must then hold nothing more. Whatever it held is given back by
        :meth:`release`, when the attempt is refused or the claim ends."""
        return True, ""

    async def release(self, swarm_id: str, claim_id: str, task_id: str) -> None:
        """Give back what :meth:`hold` held for ``claim_id`` (a claim of
        ``task_id`` that ended, or an attempt that did not land); a claim
        that held nothing is no error."""

    async def route(self, task: Task, swarms: list[SwarmRecord], threshold: float) -> list[str]:
        """Who an available task is pushed to, best first: here every
        registered swarm that covers it by ``threshold``."""
        return [s.id for s in swarms if coverage(task.capabilities, s.capabilities) >= threshold]

    async def on_blocker(self, swarm_id: str, report: dict[str, Any], task: Task | None) -> Any:
        """Called after a blocker is published (``task``: the blocked task, if
        the report names one that exists); what it returns is the report's
        ``help``. None: no help offered."""
        return None

    async def on_outcome(self, swarm_id: str, task: Task, *, success: bool) -> None:
        """Told of every completed (``success``) and failed attempt of ``swarm_id``."""
