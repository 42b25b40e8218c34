"""The seeds' ``infrafabric.event_bus.EventBus`` and their ``IFCoordinator(EventBus())``.

Both are async, as the seeds await them. ``EventBus`` names a bus (the seeds'
``host``/``port``, or a URL; none: the bound session's, else ``IF_BUS_URL``)
and speaks the seeds' ``put``/``get``/``watch(prefix, callback)``/
``publish``/``subscribe(subject, callback)`` over the real
:class:`infrafabric.bus.EventBus`. ``IFCoordinator`` delegates to the fleet's
coordinator (governed and witnessed, as :func:`infrafabric.open_fleet` builds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from infrafabric.compat._runtime import current
from infrafabric.errors import ConfigurationError
from infrafabric.fleet import SETTLE_WITHIN, Fleet, open_fleet

__all__ = ["EventBus", "IFCoordinator"]

#: the seeds' task fields that the board derives or does not keep
_DERIVED = {"status", "owner"}


class EventBus:
    """The seeds' event bus. ``EventBus()`` uses the bound session's bus (see
    :func:`infrafabric.compat.connect`), else ``IF_BUS_URL``;
    ``EventBus(host, port)`` an engine there (port 4222: NATS, else etcd, the
    seeds' default 2379); ``EventBus(url=...)`` any bus URL. Keys are the
    seeds' (``/tasks/t1/owner``): a leading ``/`` is dropped.

    Without :meth:`connect`, each call uses the session's connection or opens
    one for the call; after it, this object keeps its own until :meth:`disconnect`."""

    def __init__(self, host: str | None = None, port: int | None = None, *, url: str | None = None) -> None:
        if url is None and (host is not None or port is not None):
            port = 2379 if port is None else port
            url = f"{'nats' if port == 4222 else 'etcd'}://{host or 'localhost'}:{port}"
        self.url = url
        self._opener: open_fleet | None = None
        self._fleet: Fleet | None = None
        self._streams: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def fleet(self) -> AsyncIterator[Fleet]:
        """The fleet a call uses (see the class docs)."""
        if self._fleet is not None:
            yield self._fleet
            return
        session = current()
        if session is not None and self.url in (None, session.url):
            yield session.fleet
            return
        async with open_fleet(self.url, watch=False) as fleet:
            yield fleet

    async def connect(self) -> EventBus:
        """Open this object's own connection (kept until :meth:`disconnect`)."""
        if self._fleet is None:
            self._opener = open_fleet(self.url, watch=False)
            self._fleet = await self._opener.__aenter__()
        return self

    async def disconnect(self) -> None:
        for task in list(self._streams):
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)
        self._streams.clear()
        if self._opener is not None:
            opener, self._opener, self._fleet = self._opener, None, None
            await opener.__aexit__(None, None, None)

    close = disconnect

    async def put(self, key: str, value: str | bytes) -> bool:
        async with self.fleet() as fleet:
            await fleet.bus.put(_key(key), value)
        return True

    async def get(self, key: str) -> str | None:
        async with self.fleet() as fleet:
            entry = await fleet.bus.get(_key(key))
        return None if entry is None else entry.text()

    async def publish(self, subject: str, data: str | bytes) -> None:
        async with self.fleet() as fleet:
            await fleet.bus.publish(_key(subject), data)

    async def health_check(self) -> bool:
        async with self.fleet() as fleet:
            return bool(await fleet.bus.health_check())

    async def watch(self, prefix: str, callback: Callable[..., Any]) -> None:
        """Call ``callback(event)`` for every change under ``prefix`` until
        :meth:`disconnect` (needs :meth:`connect` or a session: a watch outlives the call)."""
        fleet = self._held("watch")
        key = _key(prefix).rstrip("/")
        stream = await fleet.bus.watch(key + "/" if key else "").start()
        self._follow(stream, callback)

    async def subscribe(self, subject: str, callback: Callable[..., Any]) -> None:
        """Call ``callback(message)`` for every message on ``subject`` until :meth:`disconnect`."""
        fleet = self._held("subscribe")
        stream = await fleet.bus.subscribe(_key(subject)).start()
        self._follow(stream, callback)

    def _held(self, what: str) -> Fleet:
        if self._fleet is not None:
            return self._fleet
        session = current()
        if session is not None and self.url in (None, session.url):
            return session.fleet
        raise ConfigurationError(f"{what}() needs a connection that outlives the call",
                                 hint="await event_bus.connect() first, or use infrafabric.compat.connect()")

    def _follow(self, stream: Any, callback: Callable[..., Any]) -> None:
        async def pump() -> None:
            try:
                async for item in stream:
                    got = callback(item)
                    if inspect.isawaitable(got):
                        await got
            finally:
                await stream.close()

        task = asyncio.ensure_future(pump())
        self._streams.add(task)


def _key(key: str) -> str:
    if not isinstance(key, str):
        raise ConfigurationError(f"key must be a string, got {key!r}")
    return key.lstrip("/")


class IFCoordinator:
    """The seeds' coordinator, ``IFCoordinator(EventBus())``: every method
    awaits the fleet's real coordinator (:class:`infrafabric.coordinator.IFCoordinator`)."""

    def __init__(self, event_bus: EventBus | str | None = None) -> None:
        if event_bus is None or isinstance(event_bus, str):
            event_bus = EventBus(url=event_bus)
        if not isinstance(event_bus, EventBus):
            raise ConfigurationError("event_bus must be infrafabric.event_bus.EventBus (the seeds' bus), "
                                     f"got {type(event_bus).__name__}",
                                     hint="for a connected infrafabric.bus.EventBus, use "
                                          "infrafabric.coordinator.IFCoordinator(bus) or open_fleet()")
        self.event_bus = event_bus

    async def register_swarm(self, swarm_id: str, capabilities: list[Any]) -> None:
        from infrafabric.compat.schemas import capability_names

        caps = capability_names(capabilities, what="capabilities")
        async with self.event_bus.fleet() as fleet:
            await fleet.register_swarm(swarm_id, caps)

    async def create_task(self, task: dict[str, Any]) -> None:
        """The seeds' task dict (``{'id': 'task-1', 'type': ..., 'status':
        'unclaimed'}``): ``title`` defaults to ``type``, else the id; the
        status is derived by the board (``unclaimed`` means available)."""
        if not isinstance(task, dict):
            raise ConfigurationError(f"task must be a dict, got {type(task).__name__}")
        spec = {k: v for k, v in task.items() if k not in _DERIVED and k != "type"}
        status = task.get("status", "unclaimed")
        if status not in ("unclaimed", "available"):
            raise ConfigurationError(f"task['status'] {status!r}: a new task is unclaimed "
                                     "(the board derives blocked and available from its dependencies)")
        spec.setdefault("title", str(task.get("type") or task.get("id")))
        async with self.event_bus.fleet() as fleet:
            await fleet.coordinator.create_task(spec)

    async def claim_task(self, swarm_id: str, task_id: str) -> bool:
        """Atomically claim (compare-and-swap); True for the one winner. As in
        the seeds, the claim is in the witness chain when this returns."""
        async with self.event_bus.fleet() as fleet:
            won = await fleet.coordinator.claim_task(swarm_id, task_id)
            if won:
                await fleet.witness.settle(SETTLE_WITHIN)
        return won

    async def get_task_owner(self, task_id: str) -> str | None:
        async with self.event_bus.fleet() as fleet:
            return await fleet.coordinator.get_task_owner(task_id)

    async def complete_task(self, swarm_id: str, task_id: str, result: Any = None) -> None:
        async with self.event_bus.fleet() as fleet:
            await fleet.coordinator.complete_task(swarm_id, task_id, result)

    async def push_task_to_swarm(self, swarm_id: str, task: dict[str, Any]) -> None:
        async with self.event_bus.fleet() as fleet:
            await fleet.coordinator.push_task_to_swarm(swarm_id, task)

    async def detect_blocker(self, swarm_id: str, blocker_info: dict[str, Any]) -> Any:
        async with self.event_bus.fleet() as fleet:
            return await fleet.coordinator.detect_blocker(swarm_id, blocker_info)

    async def close(self) -> None:
        await self.event_bus.disconnect()
