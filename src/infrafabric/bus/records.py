"""Typed records on the bus, and the one compare-and-swap retry policy.

Every record a component keeps on the bus (a task, a budget, a breaker, a
credential...) is a pydantic model stored as JSON under one key. A
:class:`Records` store binds a key prefix (from :mod:`infrafabric.bus.layout`)
to a model and offers reads that decode (a record that does not decode raises
:class:`~infrafabric.errors.CorruptRecordError` naming its key and revision)
and :meth:`Records.mutate`, the read-modify-write loop every component uses
instead of writing its own.

How :meth:`~Records.mutate` retries (:class:`RetryPolicy`):

* It reads the record, asks ``change`` for the new value and writes it with a
  compare-and-swap on the revision it read. When the swap loses, another
  writer got there first: it reads again and asks ``change`` again, which sees
  the winner's value and may decide differently (a claim sees the task taken).
* Updates of one key made through one store take turns (a lock per key), so
  only other processes contend; a loser pauses a random moment that grows
  with its losses, up to :attr:`RetryPolicy.max_pause`.
* A write whose outcome is unknown (:class:`~infrafabric.errors.BusTimeoutError`)
  is read back: if the record holds a value this call wrote, it succeeded;
  otherwise it is treated as a lost swap and ``change`` is asked again, with
  the record as it is now. If the write did land and another writer changed
  the record since, only ``change`` can tell: changes recognise their own
  effect (see :meth:`Records.mutate`), so a retry never applies one twice.
* It gives up with :class:`~infrafabric.errors.ConflictError` (transient) after
  :attr:`RetryPolicy.patience` bus timeouts of steady losing. Anything else
  the bus raises (unreachable, for one) and anything ``change`` raises (a
  refusal) ends the loop at once: only what can succeed is retried.

What it writes is checked first (:func:`encode`): at most
:data:`~infrafabric.bus.bounds.MAX_RECORD_BYTES`, and it must read back as
the same record, so no value that a later reader could not decode (a number
of 4,400 digits, a model bypassed with ``model_copy``) is ever stored. What it
reads and cannot decode (written by hand or by an older version) fails only
the command about that record: listings skip it with a warning naming its key
(on the ``infrafabric`` logger), and ``ifctl doctor`` finds and quarantines it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import inspect
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from infrafabric.bus.base import Entry, EventBus, EventKind
from infrafabric.bus.bounds import MAX_RECORD_BYTES
from infrafabric.errors import BusTimeoutError, ConfigurationError, ConflictError, CorruptRecordError

__all__ = ["DEFAULT_RETRY", "UNREAD", "Change", "Mirrored", "Records", "RetryPolicy", "Versioned", "decode",
           "encode", "one_look"]

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)

#: ``(current or None) -> new value, or None to write nothing``; may be async
Change = Callable[[M | None], "Awaitable[M | None] | M | None"]


@dataclass(frozen=True)
class RetryPolicy:
    """How every compare-and-swap loop on the bus retries (see the module docs)."""

    #: give up after this many bus timeouts (``?timeout=``) of steady losing
    patience: float = 10.0
    #: the longest random pause after a lost swap, in seconds
    max_pause: float = 0.02
    #: the pause grows by this much per loss, up to ``max_pause``
    step: float = 0.001

    def pause(self, losses: int) -> float:
        return random.uniform(0, min(self.step * losses, self.max_pause))


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Versioned(Generic[M]):
    """A decoded record and the revision that wrote it."""

    key: str
    value: M
    revision: int


def decode(model: type[M], entry: Entry) -> M:
    """``entry`` as a ``model``, or :class:`CorruptRecordError` naming it."""
    try:
        return model.model_validate_json(entry.value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise CorruptRecordError(
            f"corrupt {model.__name__} record {entry.key} at revision {entry.revision}: {problems}",
            hint="repair or delete the record on the bus") from exc


class _Unread:
    """The default of :meth:`Records.mutate`'s ``first``: read the record first."""


UNREAD = _Unread()


def encode(value: BaseModel, key: str = "a record") -> bytes:
    """``value`` as stored: JSON, checked to fit :data:`MAX_RECORD_BYTES` and to
    read back as a valid record (:class:`ConfigurationError` naming the key
    and the fields otherwise; nothing is written)."""
    body = value.model_dump_json().encode()
    if len(body) > MAX_RECORD_BYTES:
        raise ConfigurationError(f"{key} would be {len(body):,} bytes, more than the {MAX_RECORD_BYTES:,} "
                                 "a record may hold", hint="shorten the longest text or result in it")
    try:
        type(value).model_validate_json(body)
    except (ValidationError, ValueError) as exc:
        problems = (exc.errors()[:5] if isinstance(exc, ValidationError) else [])
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in problems) \
            or str(exc)[:300]
        raise ConfigurationError(f"{key} would not read back: {detail}") from exc
    return body


class Records(Generic[M]):
    """The records of one ``model`` under one key ``prefix``: ``prefix + id``.

    A prefix that names a single record (``gov/policy``) is used with the
    empty id. Stores are cheap; make one per component and keep it, so its
    per-key turn-taking covers every update the component makes.
    """

    def __init__(self, bus: EventBus, prefix: str, model: type[M], *,
                 retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self.bus = bus
        self.prefix = prefix
        self.model = model
        self.retry = retry
        self._turns: dict[str, asyncio.Lock] = {}

    def key(self, record_id: str = "") -> str:
        return f"{self.prefix}{record_id}"

    def id_of(self, key: str) -> str:
        return key.removeprefix(self.prefix)

    # -- reading ------------------------------------------------------------------

    async def get(self, record_id: str = "") -> Versioned[M] | None:
        """The record and its revision, or None if absent."""
        entry = await self.bus.get(self.key(record_id))
        return None if entry is None else Versioned(entry.key, decode(self.model, entry), entry.revision)

    async def read(self, record_id: str = "") -> M | None:
        """The record, or None if absent."""
        got = await self.get(record_id)
        return None if got is None else got.value

    async def exists(self, record_id: str = "") -> bool:
        return await self.bus.get(self.key(record_id)) is not None

    async def list(self) -> list[Versioned[M]]:
        """Every record under the prefix, in key order. One that does not decode
        is skipped with a warning naming it (see the module docs)."""
        return [v for v in map(self._decoded, await self.bus.list(self.prefix)) if v is not None]

    def _decoded(self, entry: Entry) -> Versioned[M] | None:
        try:
            return Versioned(entry.key, decode(self.model, entry), entry.revision)
        except CorruptRecordError as exc:
            log.warning("skipped %s (`ifctl doctor` repairs it)", exc.message)
            return None

    async def all(self) -> dict[str, M]:
        """Every record under the prefix, by id."""
        return {self.id_of(v.key): v.value for v in await self.list()}

    async def scan(self, *, batch: int = 1000) -> AsyncGenerator[Versioned[M], None]:
        """Every record under the prefix, streamed ``batch`` at a time (for
        large prefixes; in the bus's scan order, see :meth:`EventBus.scan`).
        A caller that stops early reads only the pages it took."""
        async for e in self.bus.scan(self.prefix, batch=batch):
            got = self._decoded(e)
            if got is not None:
                yield got

    # -- writing ------------------------------------------------------------------

    async def create(self, record_id: str, value: M) -> Versioned[M] | None:
        """Write ``value`` only if the record is absent; None if it exists."""
        rev = await self.bus.create(self.key(record_id), encode(value, self.key(record_id)))
        return None if rev is None else Versioned(self.key(record_id), value, rev)

    async def create_many(self, records: Sequence[tuple[str, M]]) -> builtins.list[Versioned[M] | None]:
        """:meth:`create` for many records in few round trips (see
        :meth:`EventBus.create_many`): for each, what was written, or None if
        it existed. Not atomic as a whole."""
        encoded = [(self.key(i), encode(v, self.key(i))) for i, v in records]
        revisions = await self.bus.create_many(encoded)
        return [None if rev is None else Versioned(key, value, rev)
                for (key, _), (_, value), rev in zip(encoded, records, revisions, strict=True)]

    async def put(self, record_id: str, value: M) -> Versioned[M]:
        """Write ``value`` whatever is there (records with a single writer, or
        where the last write should win)."""
        rev = await self.bus.put(self.key(record_id), encode(value, self.key(record_id)))
        return Versioned(self.key(record_id), value, rev)

    async def delete(self, record_id: str, revision: int | None = None) -> bool:
        return await self.bus.delete(self.key(record_id), revision)

    async def mutate(self, record_id: str, change: Change[M], *,
                     first: Versioned[M] | _Unread | None = UNREAD,
                     replace_corrupt: bool = False, take_turns: bool = True) -> Versioned[M] | None:
        """Read-modify-write the record until the compare-and-swap sticks (see
        the module docs for the retry policy). ``change`` gets the current
        value (None if absent) and returns the new one, or None to write
        nothing; it may raise to refuse. Returns what was written, or the
        current record when ``change`` wrote nothing (None if absent).

        ``first``: the record as the caller already read it (saves a read);
        leave it out to read it here. ``replace_corrupt``: a stored record that
        does not decode is handed to ``change`` as None and overwritten (for
        commands that repair: a reset, a new budget); otherwise it raises
        :class:`CorruptRecordError` and nothing is written. ``take_turns``
        (default) makes this process's updates of the key wait for each other;
        a claim passes False, since a claimer that would lose must hear so at
        once rather than queue behind a winner.

        A retried change is asked again with the record as it is now. When a
        write's outcome was unknown and it landed, the re-read finds it (the
        record holds this call's bytes) unless another writer changed the
        record since; ``change`` should then recognise its own effect (the
        coordinator tags its transitions, a claim its fencing token, a debit
        its ledger key) so nothing is applied twice."""
        key = self.key(record_id)
        turn = self._turns.setdefault(key, asyncio.Lock()) if take_turns else contextlib.nullcontext()
        deadline = time.monotonic() + self.retry.patience * self.bus.timeout
        mine: set[bytes] = set()  # bodies this call wrote whose outcome was unknown
        losses = 0
        current = first if not isinstance(first, _Unread) else None
        need_read = isinstance(first, _Unread)
        async with turn:
            while True:
                revision = None if current is None else current.revision
                if need_read:
                    entry = await self.bus.get(key)
                    if entry is not None and entry.value in mine:
                        return Versioned(key, decode(self.model, entry), entry.revision)
                    current, revision = None, None if entry is None else entry.revision
                    if entry is not None:
                        try:
                            current = Versioned(key, decode(self.model, entry), entry.revision)
                        except CorruptRecordError as exc:
                            if not replace_corrupt:
                                raise
                            log.warning("replacing %s", exc.message)
                need_read = True
                new = change(None if current is None else current.value)
                if inspect.isawaitable(new):
                    new = await new
                if new is None:
                    return current
                body = encode(new, key)
                try:
                    if revision is None:
                        rev = await self.bus.create(key, body)
                    else:
                        rev = await self.bus.update(key, body, revision)
                except BusTimeoutError:
                    mine.add(body)  # unknown outcome: the read-back at the top of the loop tells
                    rev = None
                if rev is not None:
                    return Versioned(key, new, rev)
                losses += 1
                if time.monotonic() > deadline:
                    raise ConflictError(f"{key}: lost {losses} compare-and-swaps in a row; giving up",
                                        hint="another process keeps changing this record; try again")
                await asyncio.sleep(self.retry.pause(losses))


#: the reads of unfollowed Mirrored records shared within one operation (see one_look)
_LOOK: contextvars.ContextVar[dict[str, asyncio.Future[Any]] | None] = contextvars.ContextVar(
    "infrafabric_one_look", default=None)


@contextlib.contextmanager
def one_look() -> Iterator[None]:
    """Within this block (one short operation: a hand-out, a claim), each
    :class:`Mirrored` record not kept by a watch is read from the bus at
    most once: a second read of it (an admission check after a stop check,
    the same swarm's record twice) gets what the first one got, and reads
    asked for at once share one request. As a watched copy may lag by a
    moment, so may this, by the block's length: use it where such a copy
    would do, never for what must be exact (the compare-and-swaps). A write
    through the record forgets what was read of it. Nested, it is the
    enclosing block's."""
    if _LOOK.get() is not None:
        yield
        return
    token = _LOOK.set({})
    try:
        yield
    finally:
        _LOOK.reset(token)


class Mirrored(Records[M]):
    """:class:`Records` whose reads are answered from a live copy while
    :meth:`follow` runs: the records are listed once, then kept by a watch
    from the revision listed at, and this process's own writes are applied
    to the copy as they return (so it reads what it wrote at once). Records
    another process writes arrive a moment later, through the watch: use it
    for what may lag by that (an admission check), never for a decision
    that must be exact — those are the compare-and-swaps, which always go to
    the bus. Until :meth:`follow` (or once the watch fails) every read goes
    to the bus."""

    def __init__(self, bus: EventBus, prefix: str, model: type[M], *,
                 retry: RetryPolicy = DEFAULT_RETRY) -> None:
        super().__init__(bus, prefix, model, retry=retry)
        self._copy: dict[str, Versioned[M]] | None = None
        #: the newest revision applied per key (a deleted key's too): older news is dropped
        self._seen: dict[str, int] = {}
        self._follower: asyncio.Task[None] | None = None

    async def follow(self) -> None:
        """Start keeping the copy (idempotent); returns once it is loaded."""
        if self._follower is not None:
            return
        start = await self.bus.revision() + 1
        watch = self.bus.watch(self.prefix, start_revision=start)
        await watch.start()
        try:
            if self.prefix.endswith("/"):
                listed = await super().list()
            else:  # one record (a policy, a directory): a read, not a listing of a busy stream
                one = await super().get()
                listed = [one] if one is not None else []
        except BaseException:
            await watch.close()
            raise
        self._seen = {}
        self._copy = {}
        for v in listed:
            self._apply(v.key, v, v.revision)
        self._follower = asyncio.create_task(self._follow(watch), name=f"if-mirror-{self.prefix}")

    async def stop(self) -> None:
        """Stop keeping the copy: reads go to the bus again."""
        task, self._follower, self._copy = self._follower, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _follow(self, watch: Any) -> None:
        try:
            async with watch:
                async for ev in watch:
                    if ev.kind is EventKind.DELETE or ev.value is None:
                        self._apply(ev.key, None, ev.revision)
                        continue
                    got = self._decoded(Entry(ev.key, ev.value, ev.revision))
                    if got is not None:
                        self._apply(ev.key, got, ev.revision)
        except Exception as exc:  # the copy can no longer be trusted: read the bus from now on
            log.warning("stopped mirroring %s (%s): reading the bus instead", self.prefix, exc)
            self._copy = None

    def _apply(self, key: str, value: Versioned[M] | None, revision: int) -> None:
        if self._copy is None or revision <= self._seen.get(key, 0):
            return
        self._seen[key] = revision
        if value is None:
            self._copy.pop(key, None)
        else:
            self._copy[key] = value

    # -- reading from the copy --------------------------------------------------------

    async def get(self, record_id: str = "") -> Versioned[M] | None:
        if self._copy is not None:
            return self._copy.get(self.key(record_id))
        look = _LOOK.get()
        if look is None:
            return await super().get(record_id)
        key = self.key(record_id)
        shared = look.get(key)
        if shared is not None:
            await asyncio.wait([shared])
            if not shared.cancelled():
                got: Versioned[M] | None = shared.result()  # (its failure is this operation's too)
                return got
        mine: asyncio.Future[Versioned[M] | None] = asyncio.get_running_loop().create_future()
        look[key] = mine
        try:
            got = await super().get(record_id)
        except asyncio.CancelledError:
            mine.cancel()
            raise
        except BaseException as exc:
            mine.set_exception(exc)
            mine.exception()  # retrieved: a sharer may never ask
            raise
        mine.set_result(got)
        return got

    @property
    def following(self) -> bool:
        """Whether reads are answered from the watched copy now."""
        return self._copy is not None

    async def get_exact(self, record_id: str = "") -> Versioned[M] | None:
        """The record as the bus has it now (neither the copy nor a look)."""
        return await Records.get(self, record_id)

    async def list_exact(self) -> builtins.list[Versioned[M]]:
        """Every record as the bus has it now (neither the copy nor a look)."""
        return await Records.list(self)

    def _forget(self, key: str) -> None:
        look = _LOOK.get()
        if look is not None:
            look.pop(key, None)

    async def exists(self, record_id: str = "") -> bool:
        if self._copy is None:
            return await super().exists(record_id)
        return self.key(record_id) in self._copy

    async def list(self) -> builtins.list[Versioned[M]]:
        if self._copy is None:
            return await super().list()
        return [self._copy[k] for k in sorted(self._copy)]

    # -- writing through ---------------------------------------------------------------

    async def create(self, record_id: str, value: M) -> Versioned[M] | None:
        self._forget(self.key(record_id))
        made = await super().create(record_id, value)
        if made is not None:
            self._apply(made.key, made, made.revision)
        return made

    async def put(self, record_id: str, value: M) -> Versioned[M]:
        self._forget(self.key(record_id))
        made = await super().put(record_id, value)
        self._apply(made.key, made, made.revision)
        return made

    async def delete(self, record_id: str, revision: int | None = None) -> bool:
        key = self.key(record_id)
        self._forget(key)
        known = self._copy.get(key) if self._copy is not None else None
        done = await super().delete(record_id, revision)
        if done and known is not None and self._copy is not None:
            # the delete's own revision comes with its watch event; until then nothing at or
            # below the deleted record's may bring it back
            self._copy.pop(key, None)
            self._seen[key] = max(self._seen.get(key, 0), known.revision, revision or 0)
        return done

    async def mutate(self, record_id: str, change: Change[M], *,
                     first: Versioned[M] | _Unread | None = UNREAD,
                     replace_corrupt: bool = False, take_turns: bool = True) -> Versioned[M] | None:
        self._forget(self.key(record_id))
        got = await super().mutate(record_id, change, first=first, replace_corrupt=replace_corrupt,
                                   take_turns=take_turns)
        self._forget(self.key(record_id))  # (its reads meanwhile saw what it was changing)
        if got is not None:
            self._apply(got.key, got, got.revision)
        return got
