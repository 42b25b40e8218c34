"""``Witness``: one tamper-evident chain for the whole fleet, stored on the bus.

Layout (under the bus namespace):

* ``witness/e/<seq, 12 digits>`` — entry ``seq`` (written once, with ``create``)
* ``witness/head``               — a hint: the last seq and hash some writer saw
* ``witness/cp/<size, 12 digits>`` — signed checkpoints (text form)
* ``witness/keys/<key id hex>``  — public verifier keys (text form)

**Why the chain cannot fork**: entry N is written with ``create`` (only if
absent), so exactly one writer ever owns position N, and its ``prev_hash`` is
the hash of entry N-1, which was itself immutable when the writer read it. A
writer that loses position N reads the winner and tries N+1.

**Unknown outcomes**: if a ``create`` times out, the writer reads position N
back; if it holds the writer's own ``entry_id`` the append succeeded, so a
retry never duplicates an entry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from infrafabric.bus import EventBus, EventKind
from infrafabric.errors import BusTimeoutError, BusUnavailableError, ConfigurationError
from infrafabric.witness.checkpoint import Checkpoint, Signer, Verifier
from infrafabric.witness.entry import GENESIS, SEVERITIES, WitnessEntry

__all__ = ["Filter", "VerifyReport", "Witness"]

ENTRIES = "witness/e/"
HEAD = "witness/head"
CHECKPOINTS = "witness/cp/"
KEYS = "witness/keys/"
RETRY_READS = 20


def entry_key(seq: int) -> str:
    return f"{ENTRIES}{seq:012d}"


@dataclass
class Filter:
    """Which entries a query wants (all fields optional)."""

    component: str | None = None
    operation: str | None = None
    actor: str | None = None
    trace_id: str | None = None
    since: float | None = None  # epoch seconds
    until: float | None = None
    min_severity: str | None = None

    def __post_init__(self) -> None:
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise ConfigurationError(
                f"severity must be one of {', '.join(SEVERITIES)}, got {self.min_severity!r}")

    def match(self, e: WitnessEntry) -> bool:
        return ((self.component is None or e.component == self.component)
                and (self.operation is None or e.operation == self.operation)
                and (self.actor is None or e.actor == self.actor)
                and (self.trace_id is None or e.trace_id == self.trace_id)
                and (self.since is None or e.time >= self.since)
                and (self.until is None or e.time <= self.until)
                and (self.min_severity is None
                     or SEVERITIES.index(e.severity) >= SEVERITIES.index(self.min_severity)))


@dataclass
class VerifyReport:
    """What :meth:`Witness.verify` found. ``ok`` is False at the first problem."""

    ok: bool = True
    entries: int = 0
    head_hash: str = GENESIS
    first_bad_seq: int | None = None
    problem: str | None = None
    checkpoints_checked: int = 0
    notes: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, problem: str) -> None:
        if self.ok:
            self.ok, self.first_bad_seq, self.problem = False, seq, problem


class Witness:
    """The audit chain client. Any number, in any number of processes, append
    to one chain. ``trace_id`` and ``actor`` are defaults for entries this
    object writes; ``signer`` (optional) signs a checkpoint every
    ``checkpoint_every`` entries it appends. ``written`` lists this object's
    own entries (what ``--trace`` prints)."""

    def __init__(self, bus: EventBus, *, trace_id: str | None = None, actor: str | None = None,
                 signer: Signer | None = None, checkpoint_every: int | None = 1000) -> None:
        self.bus = bus
        self.trace_id = trace_id
        self.actor = actor
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.written: list[WitnessEntry] = []
        self._head: tuple[int, str] | None = None
        self._lock = asyncio.Lock()

    @property
    def origin(self) -> str:
        return f"infrafabric/{self.bus.namespace}"

    # -- appending --------------------------------------------------------------

    async def append(self, component: str, operation: str, params: dict[str, Any] | None = None, *,
                     actor: str | None = None, trace_id: str | None = None,
                     severity: str = "info") -> WitnessEntry:
        """Append one entry; returns it once it is durably in the chain."""
        async with self._lock:  # entries from one object go in order
            seq, prev = await self._load_head()
            entry_id: str | None = None
            while True:
                entry = WitnessEntry.build(
                    seq=seq + 1, prev_hash=prev, component=component, operation=operation,
                    params=params, actor=actor or self.actor, trace_id=trace_id or self.trace_id,
                    severity=severity, entry_id=entry_id)
                entry_id = entry.entry_id
                try:
                    won = await self.bus.create(entry_key(entry.seq), entry.to_json()) is not None
                except BusTimeoutError:
                    won = False  # unknown: the read below tells
                if won:
                    break
                other = await self._read_back(entry.seq)
                if other is None:
                    continue  # the timed-out create was not applied: try again
                if other.entry_id == entry_id:
                    entry = other
                    break
                seq, prev = other.seq, other.hash
            self._head = (entry.seq, entry.hash)
        self.written.append(entry)
        await self._advance_hint(entry)
        if self.signer is not None and self.checkpoint_every and entry.seq % self.checkpoint_every == 0:
            await self.checkpoint()
        return entry

    async def log_operation(self, component: str, operation: str, params: dict[str, Any] | None = None,
                            **kwargs: Any) -> WitnessEntry:
        """The seeds' name for :meth:`append` (``timestamp=`` is ignored: the
        witness stamps entries itself)."""
        kwargs.pop("timestamp", None)
        return await self.append(component, operation, params, **kwargs)

    async def _read_back(self, seq: int) -> WitnessEntry | None:
        for attempt in range(RETRY_READS):
            try:
                got = await self.bus.get(entry_key(seq))
                return None if got is None else WitnessEntry.from_json(got.value)
            except (BusTimeoutError, BusUnavailableError):
                if attempt == RETRY_READS - 1:
                    raise
                await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
        return None  # pragma: no cover

    async def _load_head(self) -> tuple[int, str]:
        if self._head is not None:
            return self._head
        hint = await self.bus.get(HEAD)
        if hint is None:
            return 0, GENESIS
        data = json.loads(hint.value)
        return int(data["seq"]), str(data["hash"])

    async def _advance_hint(self, entry: WitnessEntry) -> None:
        # Best effort and monotonic: a stale hint only costs the next new
        # writer a few reads while it walks forward.
        for _ in range(3):
            hint = await self.bus.get(HEAD)
            if hint is not None and int(json.loads(hint.value)["seq"]) >= entry.seq:
                return
            body = json.dumps({"seq": entry.seq, "hash": entry.hash})
            if hint is None:
                if await self.bus.create(HEAD, body) is not None:
                    return
            elif await self.bus.update(HEAD, body, hint.revision) is not None:
                return

    def observer(self, component: str, *, severities: dict[str, str] | None = None
                 ) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
        """An observer for the coordinator (and other components): every
        operation it reports becomes an entry."""
        levels = severities or {}

        async def observe(operation: str, params: dict[str, Any]) -> None:
            actor = params.get("swarm_id") if isinstance(params.get("swarm_id"), str) else None
            await self.append(component, operation, params, actor=actor,
                              severity=levels.get(operation, "info"))

        return observe

    # -- reading ----------------------------------------------------------------

    async def entries(self, *, batch: int = 1000) -> AsyncIterator[WitnessEntry]:
        """Every entry, streamed oldest first (malformed ones raise ValueError)."""
        async for item in self.bus.scan(ENTRIES, batch=batch):
            yield WitnessEntry.from_json(item.value)

    async def get_operations(self, component: str | None = None, operation: str | None = None,
                             **filters: Any) -> list[WitnessEntry]:
        """The seeds' query: matching entries, oldest first."""
        f = Filter(component=component, operation=operation, **filters)
        return [e async for e in self.entries() if f.match(e)]

    async def query(self, f: Filter, *, newest_first: bool = True, limit: int | None = None
                    ) -> list[WitnessEntry]:
        found = [e async for e in self.entries() if f.match(e)]
        if newest_first:
            found.reverse()
        return found[:limit] if limit is not None else found

    async def follow(self, f: Filter) -> AsyncIterator[WitnessEntry]:
        """Matching entries as they are appended, live."""
        async with self.bus.watch(ENTRIES) as watch:
            async for ev in watch:
                if ev.kind is EventKind.PUT and ev.value is not None:
                    e = WitnessEntry.from_json(ev.value)
                    if f.match(e):
                        yield e

    async def trace(self, trace_id: str) -> list[WitnessEntry]:
        """Every entry of one trace, in order."""
        return [e async for e in self.entries() if e.trace_id == trace_id]

    async def head(self) -> tuple[int, str]:
        """(size, head hash) of the chain as stored now (walks past a stale hint)."""
        seq, prev = await self._load_head()
        while True:
            nxt = await self.bus.get(entry_key(seq + 1))
            if nxt is None:
                return seq, prev
            e = WitnessEntry.from_json(nxt.value)
            seq, prev = e.seq, e.hash

    # -- checkpoints --------------------------------------------------------------

    async def checkpoint(self) -> Checkpoint:
        """Sign the current head and store the checkpoint on the bus."""
        if self.signer is None:
            raise ConfigurationError("this witness has no signing key",
                                     hint="ifctl witness checkpoint uses the key in IF_HOME")
        size, head_hash = await self.head()
        cp = self.signer.sign(self.origin, size, head_hash)
        await self.bus.put(f"{KEYS}{self.signer.id.hex()}", self.signer.to_text())
        await self.bus.put(f"{CHECKPOINTS}{size:012d}", cp.to_text())
        return cp

    async def stored_checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint.parse(e.value.decode(), source=e.key)
                for e in await self.bus.list(CHECKPOINTS)]

    async def published_verifiers(self) -> list[Verifier]:
        return [Verifier.parse(e.value.decode(), source=e.key) for e in await self.bus.list(KEYS)]

    async def _explain_gap(self, seq: int, prev: str, found: int) -> str:
        # On NATS a scan yields entries in the order they were last written,
        # so an entry rewritten in place shows up late: look at it directly.
        item = await self.bus.get(entry_key(seq))
        if item is None:
            return f"entry {seq} is missing (deleted); the chain continues at {found}"
        try:
            e = WitnessEntry.from_json(item.value)
        except (ValueError, TypeError) as exc:
            return f"entry {seq} is not a valid entry: {exc}"
        problems = e.problems()
        if e.seq != seq:
            problems.append(f"it holds entry {e.seq} (moved or reordered)")
        elif e.prev_hash != prev:
            problems.append("prev_hash does not match the previous entry's hash")
        return "; ".join(problems) or f"entry {seq} was rewritten after entries that follow it"

    # -- verification ---------------------------------------------------------------

    async def verify(self, *, checkpoints: Iterable[Checkpoint] = (),
                     verifiers: Iterable[Verifier] = (), use_stored: bool = True) -> VerifyReport:
        """Recompute the whole chain (streaming, constant memory) and check
        every checkpoint: its signature and that the chain still has its
        entry with its hash. Stops at the first problem in the chain."""
        report = VerifyReport()
        cps = list(checkpoints)
        if use_stored:
            cps += await self.stored_checkpoints()
        keys = list(verifiers)
        trusted: list[Checkpoint] = []
        for cp in sorted(cps, key=lambda c: c.size):
            report.checkpoints_checked += 1
            problem: str | None = None
            if not keys:
                report.notes.append("no trusted key given: checkpoint signatures not checked")
            else:
                verdicts = [v.check(cp) for v in keys]
                problem = None if None in verdicts else verdicts[0]
            if problem is None and cp.origin != self.origin:
                problem = f"it is for {cp.origin!r}, not {self.origin!r}"
            if problem is not None:
                report.fail(None, f"checkpoint {cp.size}: {problem}")
            else:
                trusted.append(cp)
        report.notes = sorted(set(report.notes))
        if not report.ok:
            return report
        wanted = {cp.size: cp for cp in trusted}
        expected_seq, prev = 1, GENESIS
        async for item in self.bus.scan(ENTRIES, batch=1000):
            try:
                e = WitnessEntry.from_json(item.value)
            except (ValueError, TypeError) as exc:
                report.fail(expected_seq, f"entry at {item.key} is not a valid entry: {exc}")
                break
            if item.key != entry_key(e.seq):
                report.fail(expected_seq, f"entry {e.seq} is stored at {item.key} (moved or reordered)")
                break
            if e.seq != expected_seq:
                report.fail(expected_seq, await self._explain_gap(expected_seq, prev, e.seq))
                break
            problems = e.problems()
            if problems:
                report.fail(e.seq, "; ".join(problems))
                break
            if e.prev_hash != prev:
                report.fail(e.seq, "prev_hash does not match the previous entry's hash "
                            "(an entry before it was replaced, or entries were reordered)")
                break
            signed = wanted.get(e.seq)
            if signed is not None and signed.head_hash != e.hash:
                report.fail(e.seq, f"entry {e.seq} differs from the one checkpoint {signed.size} signed "
                            "(the chain was rewritten)")
                break
            prev = e.hash
            report.entries = e.seq
            expected_seq += 1
        report.head_hash = prev
        for cp in trusted:
            if report.ok and cp.size > report.entries:
                report.fail(report.entries + 1, f"checkpoint {cp.size}: the chain has {report.entries} "
                            f"entries but {cp.size} were signed (the tail was truncated)")
        report.notes = sorted(set(report.notes))
        return report
