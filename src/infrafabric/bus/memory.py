"""``memory://[NAME]``: an in-process bus.

Every connection to the same NAME in one process shares one store (the
default name is ``default``), across threads and event loops, so several
coordinators in one process see one truth. It keeps the last 100,000 events
for watches that start in the past. Nothing survives the process: use it for
tests and single-process tools, and ``nats://`` or ``etcd://`` to share state
between processes.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from infrafabric.bus.base import Entry, EventBus, EventKind, Message, Subscription, Watch
from infrafabric.errors import CompactedError

__all__ = ["MemoryBus"]

HISTORY = 100_000


@dataclass
class _Store:
    lock: threading.Lock = field(default_factory=threading.Lock)
    data: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    revision: int = 0
    history: deque[tuple[EventKind, str, bytes | None, int]] = field(
        default_factory=lambda: deque(maxlen=HISTORY)
    )
    watches: set[_MemoryWatch] = field(default_factory=set)
    subscriptions: dict[str, set[_MemorySubscription]] = field(default_factory=dict)

    def _emit(self, kind: EventKind, key: str, value: bytes | None) -> int:
        # caller holds the lock
        self.revision += 1
        rev = self.revision
        self.history.append((kind, key, value, rev))
        for watch in list(self.watches):
            watch._send(kind, key, value, rev)
        return rev


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


def _store(name: str) -> _Store:
    with _stores_lock:
        return _stores.setdefault(name, _Store())


class _MemoryWatch(Watch):
    _store: _Store
    _loop: asyncio.AbstractEventLoop

    def _send(self, kind: EventKind, key: str, value: bytes | None, rev: int) -> None:
        if not key.startswith(self._physical_prefix):
            return
        try:
            self._loop.call_soon_threadsafe(self._feed_physical, kind, key, value, rev)
        except RuntimeError:  # the watcher's loop is gone
            self._store.watches.discard(self)

    async def _open_from(self, revision: int) -> None:
        self._loop = asyncio.get_running_loop()
        store = self._store
        with store.lock:
            oldest = store.history[0][3] if store.history else store.revision + 1
            if revision < oldest and store.revision >= HISTORY:
                raise CompactedError(
                    f"watch start revision {revision} is older than the oldest kept ({oldest})"
                )
            for kind, key, value, rev in store.history:
                if rev >= revision:
                    self._send(kind, key, value, rev)
            store.watches.add(self)

    async def _close(self) -> None:
        with self._store.lock:
            self._store.watches.discard(self)


class _MemorySubscription(Subscription):
    _store: _Store
    _loop: asyncio.AbstractEventLoop
    _physical: str

    def _send(self, message: Message) -> None:
        try:
            self._loop.call_soon_threadsafe(self._feed, message)
        except RuntimeError:
            self._store.subscriptions.get(self._physical, set()).discard(self)

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        with self._store.lock:
            self._store.subscriptions.setdefault(self._physical, set()).add(self)

    async def _close(self) -> None:
        with self._store.lock:
            self._store.subscriptions.get(self._physical, set()).discard(self)


class MemoryBus(EventBus):
    """In-process implementation of :class:`~infrafabric.bus.EventBus`."""

    scheme = "memory"
    _store: _Store

    async def _connect(self) -> None:
        self._store = _store(self.url.name)

    async def _close(self) -> None:
        pass

    async def _get(self, key: str) -> Entry | None:
        with self._store.lock:
            item = self._store.data.get(key)
        return None if item is None else Entry(key, item[0], item[1])

    async def _put(self, key: str, value: bytes) -> int:
        with self._store.lock:
            rev = self._store._emit(EventKind.PUT, key, value)
            self._store.data[key] = (value, rev)
        return rev

    async def _create(self, key: str, value: bytes) -> int | None:
        with self._store.lock:
            if key in self._store.data:
                return None
            rev = self._store._emit(EventKind.PUT, key, value)
            self._store.data[key] = (value, rev)
        return rev

    async def _create_many(self, items: Sequence[tuple[str, bytes]]) -> list[int | None]:
        return [await self._create(k, v) for k, v in items]

    async def _update(self, key: str, value: bytes, revision: int) -> int | None:
        with self._store.lock:
            item = self._store.data.get(key)
            if item is None or item[1] != revision:
                return None
            rev = self._store._emit(EventKind.PUT, key, value)
            self._store.data[key] = (value, rev)
        return rev

    async def _delete(self, key: str, revision: int | None) -> bool:
        with self._store.lock:
            item = self._store.data.get(key)
            if item is None or (revision is not None and item[1] != revision):
                return False
            del self._store.data[key]
            self._store._emit(EventKind.DELETE, key, None)
        return True

    async def _list(self, prefix: str) -> list[Entry]:
        with self._store.lock:
            return [Entry(k, v, r) for k, (v, r) in self._store.data.items() if k.startswith(prefix)]

    async def _scan(self, prefix: str, batch: int) -> AsyncGenerator[Entry, None]:
        with self._store.lock:
            keys = sorted(k for k in self._store.data if k.startswith(prefix))
        for start in range(0, len(keys), batch):
            with self._store.lock:
                page = [(k, self._store.data.get(k)) for k in keys[start:start + batch]]
            for key, item in page:
                if item is not None:
                    yield Entry(key, item[0], item[1])
            await asyncio.sleep(0)  # a long scan must not starve the loop

    async def _current_revision(self) -> int:
        with self._store.lock:
            return self._store.revision

    def _watch(self, prefix: str, start_revision: int | None) -> Watch:
        watch = _MemoryWatch(self, prefix, start_revision)
        watch._store = self._store
        return watch

    async def _publish(self, subject: str, data: bytes) -> None:
        with self._store.lock:
            targets = list(self._store.subscriptions.get(subject, ()))
        message = Message(self._strip_ns(subject), data)
        for sub in targets:
            sub._send(message)

    def _subscribe(self, subject: str) -> Subscription:
        sub = _MemorySubscription(self, subject)
        sub._store = self._store
        sub._physical = self._ns(subject)
        return sub

    async def _health(self) -> str:
        return f"in-process store {self.url.name!r} at revision {self._store.revision}"
