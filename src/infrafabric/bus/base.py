"""The :class:`EventBus` interface every backend implements.

An event bus is a revisioned key-value store with compare-and-swap, prefix
listing and watches, plus fire-and-forget publish/subscribe. Every higher
layer (coordinator, governor, chassis, witness) is written against this
interface only, so the same code runs on ``memory://``, ``nats://`` and
``etcd://``.

Semantics every backend guarantees (the conformance suite checks them):

* **Revisions** are integers that strictly increase with every write to the
  store (per bus for memory and etcd, per bucket for NATS). A write returns
  the revision it created.
* **create** writes only if the key is absent; **update** writes only if the
  key's current revision equals the one given. Of any number of concurrent
  callers exactly one wins; the losers get ``None`` back at once, never an
  exception and never a wait.
* **delete** with a revision deletes only if that is still the current one.
  Pass ``update``/``delete`` a revision you read from ``get``, ``list`` or a
  PUT event; the revision of a DELETE event is not a key's revision (NATS
  would accept it as one and resurrect the key; etcd and memory refuse it).
* **watch** yields the put/delete events under a prefix in revision order,
  starting at ``start_revision`` (inclusive) or, when it is ``None``, with the
  first write after the watch was established. After a lost connection the
  watch resumes from the last revision it delivered: no event is lost and
  none is delivered twice.
* **publish/subscribe** is at-most-once fan-out to every subscription open at
  the time of the publish; durable state belongs in the key-value store.
* **Deadlines**: every call is bounded by the bus timeout (``?timeout=`` in
  the URL, default 5 s). A call made while the bus is unreachable fails with
  :class:`~infrafabric.errors.BusUnavailableError`; a call that missed its
  deadline fails with :class:`~infrafabric.errors.BusTimeoutError`, whose
  outcome is unknown.

Keys are namespaced transparently: ``?namespace=NAME`` (default ``default``)
isolates fleets sharing one engine; callers never see the namespace.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import enum
import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

from infrafabric.bus.keys import validate_key, validate_prefix
from infrafabric.bus.url import BusURL
from infrafabric.errors import BadRevisionError as BadRevision
from infrafabric.errors import (
    BusError,
    BusTimeoutError,
    BusUnavailableError,
    ConfigurationError,
    InfraFabricError,
)

__all__ = [
    "Entry",
    "EventBus",
    "EventKind",
    "Health",
    "Message",
    "Subscription",
    "Value",
    "Watch",
    "WatchEvent",
]

Value = bytes | str
T = TypeVar("T")
S = TypeVar("S", bound="_QueueStream[Any]")


class EventKind(enum.StrEnum):
    """What happened to a key."""

    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's current value and the revision that wrote it."""

    key: str
    value: bytes
    revision: int

    def text(self) -> str:
        return self.value.decode()

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by a watch. ``value`` is ``None`` for deletes."""

    kind: EventKind
    key: str
    value: bytes | None
    revision: int


@dataclass(frozen=True, slots=True)
class Message:
    """One pub/sub message."""

    subject: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Health:
    """What :meth:`EventBus.health_check` found. Truthy when healthy."""

    ok: bool
    backend: str
    url: str
    latency_ms: float | None = None
    detail: str = ""

    def __bool__(self) -> bool:
        return self.ok


def as_bytes(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"value must be bytes or str, got {type(value).__name__}")


class _Closed:
    """Sentinel queued to end an iterator."""


_CLOSED = _Closed()


class _QueueStream(ABC, Generic[T]):
    """An async iterator fed through a queue by a backend.

    Use it as ``async with bus.watch(...) as w: async for ev in w`` (the
    subscription is established on entry, so nothing published after entry is
    missed), or iterate it directly (established on first ``__anext__``), or
    ``await stream.start()`` explicitly.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[T | BaseException | _Closed] = asyncio.Queue()
        self._started = False
        self._closed = False
        self._start_lock = asyncio.Lock()
        self._on_close: list[Callable[[], None]] = []

    async def start(self) -> Self:
        """Establish the underlying subscription (idempotent)."""
        async with self._start_lock:
            if not self._started:
                if self._closed:
                    raise BusError("stream is closed")
                await self._open()
                self._started = True
        return self

    async def close(self) -> None:
        """Stop the stream; a pending ``__anext__`` ends with ``StopAsyncIteration``."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(_CLOSED)
        for callback in self._on_close:
            callback()
        if self._started:
            with contextlib.suppress(Exception):
                await self._close()

    def _feed(self, item: T) -> None:
        if not self._closed:
            self._queue.put_nowait(item)

    def _fail(self, exc: BaseException) -> None:
        """End the stream with ``exc`` raised in the consumer."""
        if not self._closed:
            self._queue.put_nowait(exc)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        if not self._started and not self._closed:
            await self.start()
        while True:
            if self._closed and self._queue.empty():
                raise StopAsyncIteration
            item = await self._queue.get()
            if isinstance(item, _Closed):
                self._closed = True
                raise StopAsyncIteration
            if isinstance(item, BaseException):
                await self.close()
                raise item
            accepted = self._accept(item)
            if accepted is not None:
                return accepted

    def _accept(self, item: T) -> T | None:
        """Hook to drop or rewrite an item before it is handed out."""
        return item

    async def get(self, timeout: float | None = None) -> T:  # noqa: ASYNC109 - a convenience
        """Next item, waiting at most ``timeout`` seconds (TimeoutError after)."""
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def _open(self) -> None:
        """Backend hook: establish the subscription."""

    @abstractmethod
    async def _close(self) -> None:
        """Backend hook: tear the subscription down."""


class Watch(_QueueStream[WatchEvent]):
    """Async iterator of :class:`WatchEvent` under a prefix, in revision order.

    ``last_revision`` is the revision of the last event handed out (or the
    revision before the start); backends resume from ``last_revision + 1``
    after a reconnect, and this class drops anything at or below it, so an
    event is never delivered twice.
    """

    def __init__(self, bus: EventBus, prefix: str, start_revision: int | None) -> None:
        super().__init__()
        self.bus = bus
        self.prefix = prefix
        self.start_revision = start_revision
        self.last_revision = 0 if start_revision is None else start_revision - 1
        self._keys_at_last: set[str] = set()
        self._physical_prefix = bus._ns_prefix(prefix)

    async def _open(self) -> None:
        if self.start_revision is None:
            self.start_revision = await self.bus.revision() + 1
            self.last_revision = self.start_revision - 1
        await self._open_from(self.start_revision)

    @abstractmethod
    async def _open_from(self, revision: int) -> None:
        """Backend hook: deliver events with revision >= ``revision`` under
        ``self._physical_prefix`` by calling :meth:`_feed_physical`."""

    def _feed_physical(self, kind: EventKind, key: str, value: bytes | None, revision: int) -> None:
        if key.startswith(self._physical_prefix):
            self._feed(WatchEvent(kind, self.bus._strip_ns(key), value, revision))

    def _accept(self, item: WatchEvent) -> WatchEvent | None:
        # One revision can carry several keys (an etcd transaction written by
        # another client), so "already delivered" is per (revision, key).
        if item.revision < self.last_revision:
            return None
        if item.revision == self.last_revision:
            if item.key in self._keys_at_last:
                return None
            self._keys_at_last.add(item.key)
            return item
        self.last_revision = item.revision
        self._keys_at_last = {item.key}
        return item


class Subscription(_QueueStream[Message]):
    """Async iterator of :class:`Message` published on one subject."""

    def __init__(self, bus: EventBus, subject: str) -> None:
        super().__init__()
        self.bus = bus
        self.subject = subject


class EventBus(ABC):
    """Abstract event bus. Obtain one with :func:`infrafabric.connect`.

    Subclasses implement the underscored hooks on *physical* (namespaced,
    validated) keys; this class validates input, applies the namespace and
    enforces the deadline on every call.
    """

    scheme: ClassVar[str]

    def __init__(self, url: BusURL) -> None:
        self.url = url
        self.timeout = url.timeout
        self.namespace = url.namespace
        self._connected = False
        self._streams: set[_QueueStream[Any]] = set()

    # -- lifecycle -------------------------------------------------------

    async def connect(self) -> Self:
        """Connect (idempotent). Raises BusUnavailableError if unreachable."""
        if not self._connected:
            await self._connect()
            self._connected = True
        return self

    async def close(self) -> None:
        """Close the connection and every watch and subscription opened on it."""
        if self._connected:
            self._connected = False
            for stream in list(self._streams):
                await stream.close()
            await self._close()

    disconnect = close  # the seeds' name

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- key/value -------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        """The current entry of ``key``, or ``None`` if it does not exist."""
        validate_key(key)
        with self._deadline("get", key):
            async with asyncio.timeout(self.timeout):
                entry = await self._get(self._ns(key))
        return None if entry is None else Entry(key, entry.value, entry.revision)

    async def put(self, key: str, value: Value) -> int:
        """Write ``value`` unconditionally; return the new revision."""
        validate_key(key)
        data = as_bytes(value)
        with self._deadline("put", key):
            async with asyncio.timeout(self.timeout):
                return await self._put(self._ns(key), data)

    async def create(self, key: str, value: Value) -> int | None:
        """Write only if ``key`` does not exist. The new revision, or ``None``
        if the key exists (including when a concurrent create won)."""
        validate_key(key)
        data = as_bytes(value)
        with self._deadline("create", key):
            async with asyncio.timeout(self.timeout):
                return await self._create(self._ns(key), data)

    async def create_many(self, items: Sequence[tuple[str, Value]]) -> list[int | None]:
        """:meth:`create` for many keys, in as few round trips as the engine
        allows (a NATS atomic batch, an etcd transaction, up to
        :attr:`batch_limit` keys each): for each key, in order, its new
        revision, or ``None`` if it existed. Not atomic as a whole: a caller
        that needs all or nothing removes what it wrote (see
        ``IFCoordinator.create_tasks``). Each group of keys has the bus
        deadline."""
        physical = []
        for key, value in items:
            validate_key(key)
            physical.append((self._ns(key), as_bytes(value)))
        out: list[int | None] = []
        turns = self._turns()
        for start in range(0, len(physical), self.batch_limit):
            group = physical[start:start + self.batch_limit]
            async with turns:  # a turn first: the deadline is the write's, not the queue's
                with self._deadline("create", items[start][0] if len(group) == 1 else f"{len(group)} keys"):
                    async with asyncio.timeout(self.timeout):
                        out += await self._create_many(group)
        return out

    #: most keys one :meth:`create_many` or :meth:`which_exist` round trip covers
    batch_limit = 1000
    #: groups of :meth:`create_many` one client writes at once: NATS abandons atomic batches
    #: beyond its own limit (50 per stream) as incomplete, and a few already keep the disk busy
    groups_in_flight = 8
    _groups: asyncio.Semaphore | None = None

    def _turns(self) -> asyncio.Semaphore:
        """The turns groups of one client take (made in the loop that first asks)."""
        if self._groups is None:
            self._groups = asyncio.Semaphore(self.groups_in_flight)
        return self._groups

    async def which_exist(self, keys: Sequence[str]) -> set[str]:
        """The keys of ``keys`` that exist now, in as few round trips as the
        engine allows (a NATS batch direct get per :attr:`batch_limit` keys).
        Each group of keys has the bus deadline."""
        for key in keys:
            validate_key(key)
        found: set[str] = set()
        turns = self._turns()

        async def look(group: list[str]) -> None:
            async with turns:
                with self._deadline("get", group[0] if len(group) == 1 else f"{len(group)} keys"):
                    async with asyncio.timeout(self.timeout):
                        there = await self._which_exist([self._ns(k) for k in group])
            found.update(k for k in group if self._ns(k) in there)

        await asyncio.gather(*(look(list(keys[start:start + self.batch_limit]))
                               for start in range(0, len(keys), self.batch_limit)))
        return found

    async def _which_exist(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` (physical) exist; engines override this to ask
        once. Here: concurrent single reads."""
        got = await asyncio.gather(*(self._get(k) for k in keys))
        return {k for k, e in zip(keys, got, strict=True) if e is not None}

    async def _create_many(self, items: Sequence[tuple[str, bytes]]) -> list[int | None]:
        """Create ``items`` (physical keys); engines override this to write
        them in one round trip. Here: concurrent single creates."""
        return list(await asyncio.gather(*(self._create(k, v) for k, v in items)))

    async def update(self, key: str, value: Value, revision: int) -> int | None:
        """Compare-and-swap: write only if the key's current revision is
        ``revision``. The new revision, or ``None`` on conflict (the key
        changed, or was deleted)."""
        validate_key(key)
        data = as_bytes(value)
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
            raise BadRevision(revision)
        with self._deadline("update", key):
            async with asyncio.timeout(self.timeout):
                return await self._update(self._ns(key), data, revision)

    async def delete(self, key: str, revision: int | None = None) -> bool:
        """Delete ``key``; with ``revision``, only if that is still its
        current revision. True if this call deleted it."""
        validate_key(key)
        if revision is not None and (
            not isinstance(revision, int) or isinstance(revision, bool) or revision < 1
        ):
            raise BadRevision(revision)
        with self._deadline("delete", key):
            async with asyncio.timeout(self.timeout):
                return await self._delete(self._ns(key), revision)

    async def list(self, prefix: str = "") -> list[Entry]:
        """Every entry whose key starts with ``prefix``, sorted by key."""
        validate_prefix(prefix)
        physical = self._ns_prefix(prefix)
        with self._deadline("list", prefix):
            async with asyncio.timeout(self.timeout):
                entries = await self._list(physical)
        return sorted(
            (Entry(self._strip_ns(e.key), e.value, e.revision) for e in entries
             if e.key.startswith(physical)),
            key=lambda e: e.key,
        )

    async def scan(self, prefix: str = "", *, batch: int = 1000) -> AsyncGenerator[Entry, None]:
        """Every entry under ``prefix``, streamed ``batch`` at a time so memory
        stays bounded however many there are (``list`` loads them all).

        Order: by key on memory and etcd; by revision of the last write on
        NATS (JetStream has no key order). Keys written once, in key order
        (like an append-only log with zero-padded sequence numbers), come out
        in the same order everywhere. Each page is read under the bus deadline.
        """
        validate_prefix(prefix)
        if not isinstance(batch, int) or batch < 1:
            raise ConfigurationError(f"scan batch must be a positive integer, got {batch!r}")
        physical = self._ns_prefix(prefix)
        # aclosing: a caller that stops early releases the backend's cursor at once
        with self._deadline("scan", prefix):
            async with contextlib.aclosing(self._scan(physical, batch)) as entries:
                async for entry in entries:
                    if entry.key.startswith(physical):
                        yield Entry(self._strip_ns(entry.key), entry.value, entry.revision)

    def watch(self, prefix: str = "", start_revision: int | None = None) -> Watch:
        """A :class:`Watch` of every change under ``prefix`` (see module docs)."""
        validate_prefix(prefix)
        if start_revision is not None and (
            not isinstance(start_revision, int) or isinstance(start_revision, bool)
            or start_revision < 1
        ):
            raise BadRevision(start_revision)
        return self._track(self._watch(prefix, start_revision))

    async def revision(self) -> int:
        """The store's current revision (the last one written)."""
        with self._deadline("revision", ""):
            async with asyncio.timeout(self.timeout):
                return await self._current_revision()

    # -- pub/sub ---------------------------------------------------------

    async def publish(self, subject: str, data: Value) -> None:
        """Send ``data`` to every subscription currently open on ``subject``."""
        validate_key(subject, what="subject")
        payload = as_bytes(data)
        with self._deadline("publish", subject):
            async with asyncio.timeout(self.timeout):
                await self._publish(self._ns(subject), payload)

    def subscribe(self, subject: str) -> Subscription:
        """A :class:`Subscription` to ``subject`` (exact match)."""
        validate_key(subject, what="subject")
        return self._track(self._subscribe(subject))

    # -- health ----------------------------------------------------------

    async def health_check(self) -> Health:
        """Probe the engine with a round trip bounded by 1 s; never raises."""
        if not self._connected:
            return Health(False, self.scheme, str(self.url), None, "not connected")
        start = time.perf_counter()
        try:
            async with asyncio.timeout(min(1.0, self.timeout)):
                detail = await self._health()
        except TimeoutError:
            return Health(False, self.scheme, str(self.url), None, "no answer within 1 s")
        except (InfraFabricError, OSError) as exc:
            return Health(False, self.scheme, str(self.url), None, str(exc).splitlines()[0])
        latency = (time.perf_counter() - start) * 1000
        return Health(True, self.scheme, str(self.url), round(latency, 3), detail)

    def _track(self, stream: S) -> S:
        self._streams.add(stream)
        stream._on_close.append(lambda: self._streams.discard(stream))
        return stream

    # -- namespacing -----------------------------------------------------

    def _ns(self, key: str) -> str:
        return f"{self.namespace}/{key}"

    def _ns_prefix(self, prefix: str) -> str:
        return f"{self.namespace}/{prefix}"

    def _strip_ns(self, key: str) -> str:
        return key[len(self.namespace) + 1 :]

    @contextlib.contextmanager
    def _deadline(self, op: str, key: str) -> Iterator[None]:
        if not self._connected:
            raise BusUnavailableError(
                f"{op} {key!r}: the bus {self.url} is not connected",
                hint="use `async with infrafabric.connect(url) as bus:` or `await bus.connect()`",
            )
        try:
            yield
        except TimeoutError as exc:
            raise BusTimeoutError(
                f"{op} {key!r} on {self.url} missed its {self.timeout:g} s deadline; "
                "the outcome is unknown",
                hint="read the state back before retrying a write",
            ) from exc

    # -- backend hooks ---------------------------------------------------

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    async def _get(self, key: str) -> Entry | None: ...

    @abstractmethod
    async def _put(self, key: str, value: bytes) -> int: ...

    @abstractmethod
    async def _create(self, key: str, value: bytes) -> int | None: ...

    @abstractmethod
    async def _update(self, key: str, value: bytes, revision: int) -> int | None: ...

    @abstractmethod
    async def _delete(self, key: str, revision: int | None) -> bool: ...

    @abstractmethod
    async def _list(self, prefix: str) -> builtins.list[Entry]:
        """Entries under the physical ``prefix`` (may include extra keys;
        the caller filters)."""

    async def _scan(self, prefix: str, batch: int) -> AsyncGenerator[Entry, None]:
        """Entries under the physical ``prefix`` in pages of ``batch``, each
        page bounded by the bus timeout (see :meth:`scan` for the order).

        This fallback loads the whole prefix; backends override it."""
        async with asyncio.timeout(self.timeout):
            entries = sorted(await self._list(prefix), key=lambda e: e.key)
        for entry in entries:
            yield entry

    @abstractmethod
    def _watch(self, prefix: str, start_revision: int | None) -> Watch:
        """Return an unstarted :class:`Watch` subclass for the *logical* prefix."""

    @abstractmethod
    async def _current_revision(self) -> int: ...

    @abstractmethod
    async def _publish(self, subject: str, data: bytes) -> None: ...

    @abstractmethod
    def _subscribe(self, subject: str) -> Subscription:
        """Return an unstarted :class:`Subscription` for the *logical* subject."""

    @abstractmethod
    async def _health(self) -> str:
        """One round trip to the engine; return a short description."""
