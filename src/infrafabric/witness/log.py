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
import logging
import random
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from infrafabric.bus import EventBus, EventKind
from infrafabric.bus.layout import CHECKPOINTS, ENTRIES, HEAD, VERIFIER_KEYS
from infrafabric.bus.records import Records
from infrafabric.errors import BusTimeoutError, BusUnavailableError, ConfigurationError, CorruptRecordError
from infrafabric.witness.checkpoint import Checkpoint, Signer, Verifier
from infrafabric.witness.entry import GENESIS, SEVERITIES, WitnessEntry, canonical

__all__ = ["Filter", "VerifyReport", "Witness"]

KEYS = VERIFIER_KEYS
RETRY_READS = 20
log = logging.getLogger(__name__)
MAX_BLOCK = 256
HINT_EVERY = 64
#: the widest window of positions a writer catching up with the chain reads at once
WALK_WINDOW = 32
LOSER_BACKOFF = 0.002  # seconds: the upper bound of a losing writer's random pause


def entry_key(seq: int) -> str:
    """The key of the block that starts with entry ``seq``."""
    return f"{ENTRIES}{seq:012d}"


def encode_block(entries: list[WitnessEntry]) -> bytes:
    return canonical([e.to_dict() for e in entries])


def decode_block(data: bytes) -> list[WitnessEntry]:
    """The entries of a stored block (ValueError if malformed, nesting included)."""
    try:
        items = json.loads(data)
    except RecursionError:
        raise ValueError("the block is nested too deeply to be a block of entries") from None
    if not isinstance(items, list) or not items:
        raise ValueError("a block must be a non-empty JSON array of entries")
    return [WitnessEntry.from_dict(item) for item in items]


class _Hint(BaseModel):
    """``witness/head``: the last seq and hash some writer saw, and where the
    block holding that entry starts (so a reader can check the hint names an
    entry that exists before building on it)."""

    seq: int
    hash: str
    block: int | None = None


@dataclass
class _Pending:
    fields: dict[str, Any]
    future: asyncio.Future[WitnessEntry]


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

    #: every problem found, the first one first (``problem`` is that one)
    problems: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, problem: str) -> None:
        self.problems.append(problem)
        if self.ok:
            self.ok, self.first_bad_seq, self.problem = False, seq, problem


class Witness:
    """The audit chain client. Any number, in any number of processes, append
    to one chain. ``trace_id`` and ``actor`` are defaults for entries this
    object writes; ``signer`` (optional) signs a checkpoint every
    ``checkpoint_every`` entries it appends. ``written`` lists this object's
    own entries (what ``--trace`` prints), the last ``keep_written`` of them
    (None: all, for a one-shot command; a server's witness must not grow
    without end, nor give the garbage collector every entry to walk)."""

    def __init__(self, bus: EventBus, *, trace_id: str | None = None, actor: str | None = None,
                 signer: Signer | None = None, checkpoint_every: int | None = 1000,
                 keep_written: int | None = 1000) -> None:
        self.bus = bus
        self.trace_id = trace_id
        self.actor = actor
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.written: deque[WitnessEntry] = deque(maxlen=keep_written)
        self._hint = Records(bus, HEAD, _Hint)
        self._head: tuple[int, str] | None = None
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._later: set[asyncio.Task[None]] = set()  # appends not waited for (see append_later)

    @property
    def origin(self) -> str:
        return f"infrafabric/{self.bus.namespace}"

    # -- appending --------------------------------------------------------------

    async def append(self, component: str, operation: str, params: dict[str, Any] | None = None, *,
                     actor: str | None = None, trace_id: str | None = None,
                     severity: str = "info") -> WitnessEntry:
        """Append one entry; returns it once it is durably in the chain.

        Appends made concurrently through one object are written together
        (group commit): each block costs one create however many entries it
        holds, so throughput grows with the number of appends in flight."""
        pending = self._enqueue(component, operation, params, actor=actor, trace_id=trace_id,
                                severity=severity)
        entry = await asyncio.shield(pending)  # a cancelled caller's entry is still written
        await self._checkpoint_at(entry)
        return entry

    def append_later(self, component: str, operation: str, params: dict[str, Any] | None = None, *,
                     actor: str | None = None, trace_id: str | None = None, severity: str = "info") -> None:
        """Queue one entry and return at once: it is written with the next
        block, in order with this object's other appends, and :meth:`settle`
        waits for it. For an operation whose own record on the bus already
        says what the entry would (a claim: its task's history holds the
        transition under the claim id), so that acknowledging it need not wait
        for the chain: if this process ends before the write, the entry is
        recoverable from that record (``ifctl doctor`` finds such claims and
        ``--repair`` writes their entries). A failed write is logged."""
        pending = self._enqueue(component, operation, params, actor=actor, trace_id=trace_id,
                                severity=severity)
        job = asyncio.ensure_future(self._land(pending, operation, params))
        self._later.add(job)
        job.add_done_callback(self._later.discard)

    async def _land(self, pending: asyncio.Future[WitnessEntry], operation: str,
                    params: dict[str, Any] | None) -> None:
        try:
            await self._checkpoint_at(await pending)
        except Exception as exc:  # the operation stands; its record says what the entry would have
            log.warning("witness entry %s %s was not written (%s): `ifctl doctor --repair` writes it "
                        "from the record", operation, json.dumps(params, default=str)[:200], exc)

    async def settle(self, within: float | None = None) -> None:
        """Wait (at most ``within`` seconds) for the entries queued by
        :meth:`append_later` to be written."""
        if self._later:
            await asyncio.wait(set(self._later), timeout=within)

    def _enqueue(self, component: str, operation: str, params: dict[str, Any] | None, *,
                 actor: str | None, trace_id: str | None, severity: str) -> asyncio.Future[WitnessEntry]:
        if severity not in SEVERITIES:
            raise ConfigurationError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
        pending = _Pending(dict(component=component, operation=operation, params=params,
                                actor=actor or self.actor, trace_id=trace_id or self.trace_id,
                                severity=severity, entry_id=secrets.token_hex(8)),
                           asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="if-witness-flush")
        return pending.future

    async def _checkpoint_at(self, entry: WitnessEntry) -> None:
        if (self.signer is not None and self.checkpoint_every
                and entry.seq % self.checkpoint_every == 0):
            await self.checkpoint()

    async def log_operation(self, component: str, operation: str, params: dict[str, Any] | None = None,
                            **kwargs: Any) -> WitnessEntry:
        """The seeds' name for :meth:`append` (``timestamp=`` is ignored: the
        witness stamps entries itself)."""
        kwargs.pop("timestamp", None)
        return await self.append(component, operation, params, **kwargs)

    async def _flush(self) -> None:
        while self._queue:
            batch = self._queue[:MAX_BLOCK]
            del self._queue[:len(batch)]
            try:
                entries = await self._write_block(batch)
            except BaseException as exc:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for p, e in zip(batch, entries, strict=True):
                p.future.set_result(e)

    async def _write_block(self, batch: list[_Pending]) -> list[WitnessEntry]:
        had_head = self._head is not None
        seq, prev = await self._load_head()
        ids = [p.fields["entry_id"] for p in batch]
        while True:
            entries: list[WitnessEntry] = []
            link = prev
            for n, p in enumerate(batch):
                e = WitnessEntry.build(seq=seq + 1 + n, prev_hash=link, **p.fields)
                entries.append(e)
                link = e.hash
            try:
                won = await self.bus.create(entry_key(seq + 1), encode_block(entries)) is not None
            except BusTimeoutError:
                won = False  # unknown outcome: the read below tells
            if won:
                break
            other = await self._read_back(seq + 1)
            if other is None:
                continue  # the timed-out create was not applied: try again
            if [e.entry_id for e in other] == ids:
                entries = other
                break
            # Lost the position to another writer, who is likely writing the
            # next one already: step back a moment, then catch up with reads
            # (cheaper than losing more creates), so writers take turns.
            await asyncio.sleep(random.uniform(0, LOSER_BACKOFF))
            seq, prev = await self._walk(other[-1].seq, other[-1].hash)
        last = entries[-1]
        self._head = (last.seq, last.hash)
        self.written.extend(entries)
        if not had_head or (last.seq // HINT_EVERY) != ((last.seq - len(entries)) // HINT_EVERY):
            await self._advance_hint(last, entries[0].seq)
        return entries

    async def _walk(self, seq: int, prev: str) -> tuple[int, str]:
        """From a known entry, follow the stored blocks to the chain's end.
        The positions ahead are read a window at a time, each twice as wide
        as the last (up to :data:`WALK_WINDOW`): a loser of a race is a block
        or two behind, but a new process starting from the head hint may be
        up to :data:`HINT_EVERY` behind, which one read at a time made a
        one-shot command's first entry cost tens of round trips."""
        width = 2
        while True:
            start = seq + 1
            window = await asyncio.gather(*(self._read_back(start + i) for i in range(width)))
            # a block's key is its first entry's seq: the next block starts after this one's last
            while start <= seq + 1 < start + width:
                nxt = window[seq + 1 - start]
                if nxt is None:
                    return seq, prev
                seq, prev = nxt[-1].seq, nxt[-1].hash
            width = min(width * 2, WALK_WINDOW)

    async def _read_back(self, seq: int) -> list[WitnessEntry] | None:
        for attempt in range(RETRY_READS):
            try:
                got = await self.bus.get(entry_key(seq))
                if got is None:
                    return None
                try:
                    return decode_block(got.value)
                except (ValueError, TypeError) as exc:
                    raise CorruptRecordError(
                        f"witness block {got.key} is not a valid block of entries ({exc}): the chain has "
                        "been tampered with", hint="ifctl witness verify names where it breaks") from None
            except (BusTimeoutError, BusUnavailableError):
                if attempt == RETRY_READS - 1:
                    raise
                await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
        return None  # pragma: no cover

    async def _load_head(self) -> tuple[int, str]:
        if self._head is not None:
            return self._head
        try:
            hint = await self._hint.read()
        except CorruptRecordError:  # only a hint: walking from the start finds the real head
            hint = None
        if hint is None or not await self._hint_holds(hint):
            return 0, GENESIS
        return hint.seq, hint.hash

    async def _hint_holds(self, hint: _Hint) -> bool:
        """Whether the hint names an entry that exists, with that hash. A hint
        that does not (forged, or from before hints said where their block
        starts) is not built on: a writer trusting a hint past the end would
        leave a gap in the chain for ever."""
        if hint.block is None or not 0 < hint.block <= hint.seq:
            return False
        block = await self._read_back(hint.block)
        good = bool(block) and block is not None and block[-1].seq == hint.seq and block[-1].hash == hint.hash
        if not good:
            log.warning("witness head hint (seq %s) does not name a stored entry: ignored", hint.seq)
        return good

    async def _advance_hint(self, entry: WitnessEntry, block: int) -> None:
        # Monotonic: a stale hint only costs a new writer a few reads while it
        # walks forward, so it is refreshed only every HINT_EVERY entries.
        async def change(hint: _Hint | None) -> _Hint | None:
            if hint is not None and hint.seq >= entry.seq and await self._hint_holds(hint):
                return None  # a newer, genuine hint is there already
            return _Hint(seq=entry.seq, hash=entry.hash, block=block)

        await self._hint.mutate("", change, replace_corrupt=True)

    def observer(self, component: str, *, severities: dict[str, str] | None = None,
                 later: frozenset[str] = frozenset()) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
        """An observer for the coordinator (and other components): every
        operation it reports becomes an entry. The entry's actor is the swarm
        that acted (``swarm_id``), else who did it (``by``: an operator), else
        this witness's own actor (the process that noticed, e.g. a lapsed lease).
        Operations in ``later`` are not waited for (:meth:`append_later`):
        only those whose own record holds what the entry says."""
        levels = severities or {}

        async def observe(operation: str, params: dict[str, Any]) -> None:
            actor = next((v for v in (params.get("swarm_id"), params.get("by")) if isinstance(v, str) and v),
                         None)
            if operation in later:
                self.append_later(component, operation, params, actor=actor,
                                  severity=levels.get(operation, "info"))
                return
            await self.append(component, operation, params, actor=actor,
                              severity=levels.get(operation, "info"))

        return observe

    # -- reading ----------------------------------------------------------------

    async def entries(self, *, batch: int = 1000) -> AsyncIterator[WitnessEntry]:
        """Every entry, streamed oldest first (malformed ones raise ValueError)."""
        async for item in self.bus.scan(ENTRIES, batch=batch):
            for e in decode_block(item.value):
                yield e

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
                    for e in decode_block(ev.value):
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
            last = decode_block(nxt.value)[-1]
            seq, prev = last.seq, last.hash

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
        """The checkpoints on the bus that parse (see :meth:`malformed_records`)."""
        return (await self._stored(CHECKPOINTS, Checkpoint.parse))[0]

    async def published_verifiers(self) -> list[Verifier]:
        """The verifier keys on the bus that parse (see :meth:`malformed_records`)."""
        return (await self._stored(KEYS, Verifier.parse))[0]

    async def malformed_records(self) -> list[str]:
        """What is wrong with each record under ``witness/cp/`` and ``witness/keys/``
        that is not a checkpoint or a key: only writers of signed checkpoints
        write there, so one that does not parse is tampering, not noise."""
        return [*(await self._stored(CHECKPOINTS, Checkpoint.parse))[1],
                *(await self._stored(KEYS, Verifier.parse))[1]]

    async def _stored(self, prefix: str, parse: Callable[..., Any]) -> tuple[list[Any], list[str]]:
        good, bad = [], []
        for e in await self.bus.list(prefix):
            try:
                good.append(parse(e.value.decode("utf-8"), source=e.key))
            except (ConfigurationError, UnicodeDecodeError, ValueError) as exc:
                reason = exc.message if isinstance(exc, ConfigurationError) else f"{e.key}: not text ({exc})"
                bad.append(f"{reason} (tampering: only signed checkpoints and their keys are written there)")
        return good, bad

    @staticmethod
    def _check(e: WitnessEntry, seq: int, prev: str, signed: dict[int, Checkpoint]) -> str | None:
        """What is wrong with ``e`` as entry ``seq`` following hash ``prev``."""
        if e.seq != seq:
            return f"entry {seq} is out of place: found entry {e.seq} (reordered)"
        problems = e.problems()
        if problems:
            return "; ".join(problems)
        if e.prev_hash != prev:
            return ("prev_hash does not match the previous entry's hash "
                    "(an entry before it was replaced, or entries were reordered)")
        cp = signed.get(seq)
        if cp is not None and cp.head_hash != e.hash:
            return f"entry {seq} differs from the one checkpoint {cp.size} signed (the chain was rewritten)"
        return None

    async def _explain_gap(self, seq: int, prev: str, found: int) -> str:
        # On NATS a scan yields blocks in the order they were last written, so
        # a block rewritten in place shows up late: look at it directly.
        item = await self.bus.get(entry_key(seq))
        if item is None:
            return f"entry {seq} is missing (deleted); the chain continues at {found}"
        try:
            block = decode_block(item.value)
        except (ValueError, TypeError) as exc:
            return f"block at {item.key} is not a valid block of entries: {exc}"
        if block[0].seq != seq:
            return f"position {seq} holds entry {block[0].seq} (moved or reordered)"
        return (self._check(block[0], seq, prev, {})
                or f"entry {seq} was rewritten after entries that follow it")

    # -- verification ---------------------------------------------------------------

    async def verify(self, *, checkpoints: Iterable[Checkpoint] = (),
                     verifiers: Iterable[Verifier] = (), use_stored: bool = True) -> VerifyReport:
        """Recompute the whole chain (streaming, constant memory) and check
        every checkpoint: its signature and that the chain still has its
        entry with its hash. Stops at the first problem in the chain."""
        report = VerifyReport()
        # the caller vouches for the checkpoints it hands in; the bus may also hold
        # checkpoints signed by other operators' keys, which are not evidence either way
        cps = [(cp, False) for cp in checkpoints]
        if use_stored:
            cps += [(cp, True) for cp in await self.stored_checkpoints()]
            # a malformed checkpoint or key on the bus is tampering: reported, and the chain
            # and the caller's own checkpoints are still checked (it must not blind the check)
            for malformed in await self.malformed_records():
                report.fail(None, malformed)
        keys = list(verifiers)
        known = {(v.name, v.id) for v in keys}
        trusted: list[Checkpoint] = []
        for cp, from_bus in sorted(cps, key=lambda c: c[0].size):
            problem: str | None = None
            if not keys:
                report.notes.append("no trusted key given: checkpoint signatures not checked")
            elif from_bus and (cp.key_name, cp.signature[:4]) not in known:
                report.notes.append(f"checkpoint {cp.size} on the bus is signed by a key not trusted here "
                                    f"({cp.key_name} {cp.signature[:4].hex()}): not used")
                continue
            else:
                verdicts = [v.check(cp) for v in keys]
                problem = None if None in verdicts else verdicts[0]
            report.checkpoints_checked += 1
            if problem is None and cp.origin != self.origin:
                problem = f"it is for {cp.origin!r}, not {self.origin!r}"
            if problem is not None:
                report.fail(None, f"checkpoint {cp.size}: {problem}")
            else:
                trusted.append(cp)
        report.notes = sorted(set(report.notes))
        wanted = {cp.size: cp for cp in trusted}
        expected_seq, prev = 1, GENESIS
        broken = False  # the chain itself breaks (earlier problems may be about checkpoints only)

        def breaks(seq: int, problem: str) -> None:
            nonlocal broken
            broken = True
            report.fail(seq, problem)

        async for item in self.bus.scan(ENTRIES, batch=1000):
            try:
                block = decode_block(item.value)
            except (ValueError, TypeError) as exc:
                breaks(expected_seq, f"block at {item.key} is not a valid block of entries: {exc}")
                break
            if block[0].seq != expected_seq:
                breaks(expected_seq, await self._explain_gap(expected_seq, prev, block[0].seq))
                break
            if item.key != entry_key(block[0].seq):
                breaks(expected_seq, f"entry {block[0].seq} is stored at {item.key} (moved)")
                break
            for e in block:
                wrong = self._check(e, expected_seq, prev, wanted)
                if wrong is not None:
                    breaks(expected_seq, wrong)
                    break
                prev = e.hash
                report.entries = e.seq
                expected_seq += 1
            if broken:
                break
        report.head_hash = prev
        for cp in trusted:
            if not broken and cp.size > report.entries:
                report.fail(report.entries + 1, f"checkpoint {cp.size}: the chain has {report.entries} "
                            f"entries but {cp.size} were signed (the tail was truncated)")
        report.notes = sorted(set(report.notes))
        return report
