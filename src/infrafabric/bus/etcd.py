"""``etcd://host:port[,host:port...]``: the bus on etcd v3, through aetcd (gRPC).

Layout in etcd:

* a bus key ``K`` in namespace ``NS`` is the etcd key ``/infrafabric/NS/K``; its
  revision is the key's ``mod_revision`` and the bus revision is etcd's store
  revision, so revisions are shared by every namespace on one cluster;
* a pub/sub message on subject ``S`` is a key
  ``/infrafabric/_pubsub/NS/S/#<unique id>`` attached to a short-lived lease
  (``?pubsub_ttl=`` seconds, default 30) that the bus grants lazily and reuses
  for half its TTL; a subscription is a watch of that prefix from the revision
  current when it opened. A closed subscription's watch lingers for
  :data:`LINGER` seconds, and the subject's next subscription in the process
  takes it over rather than creating another.

Writes are single transactions (create compares ``version == 0``, update and
guarded delete compare ``mod_revision``). The client talks to the first host of
the URL that answers and moves to the next one when a connection fails. gRPC
re-dials by itself after a server restart; watches and subscriptions are
re-created from the revision after the last one they received, so a restart
neither loses nor repeats an event (unless etcd compacted that history in the
meantime: the watch then fails with :class:`~infrafabric.errors.CompactedError`).
A write whose connection breaks mid-call fails with
:class:`~infrafabric.errors.BusTimeoutError` (etcd may have applied it), not
:class:`~infrafabric.errors.BusUnavailableError`, which promises nothing was.

Options: ``timeout`` (per call, also the gRPC deadline), ``connect_timeout``
(per host at connect, default ``timeout``), ``pubsub_ttl`` (whole seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any

# gRPC's C core logs TLS failures to stderr; the bus's errors say what they mean
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import aetcd
import aetcd.exceptions
import aetcd.watcher
import grpc

from infrafabric.bus.base import Entry, EventBus, EventKind, Message, Subscription, Watch
from infrafabric.bus.security import Security, access_failure
from infrafabric.bus.url import BusURL
from infrafabric.errors import (
    BusError,
    BusTimeoutError,
    BusUnavailableError,
    CompactedError,
    InfraFabricError,
)

__all__ = ["EtcdBus"]

ROOT = b"/infrafabric/"
PUBSUB_ROOT = ROOT + b"_pubsub/"
# A key that can never exist (keys have no NUL): reading it is the cheapest way
# to learn the store revision, and a range at a revision on it checks compaction.
_NOWHERE = ROOT + b"\x00"
_NOWHERE_END = _NOWHERE + b"\x00"

#: seconds a closed subscription's watch waits for the subject's next subscription to take it
LINGER = 10.0

_GRPC_OPTIONS = {
    # gRPC's default reconnect backoff grows to 120 s; a bus should notice a
    # restarted server within about a second.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    # Detect a dead or frozen peer under a quiet watch. etcd refuses pings more
    # often than every 5 s (--grpc-keepalive-min-time).
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.http2.max_pings_without_data": 0,
    # gRPC caps replies at 4 MiB by default; a large list() or watch batch is
    # bounded by etcd instead.
    "grpc.max_receive_message_length": -1,
}

# gRPC details that prove a request never left the client.
_NEVER_SENT = (
    "failed to connect to all addresses",
    "connection refused",
    "dns resolution failed",
    "empty address list",
)

#: calls in a row that miss their deadline on one member before the bus moves to
#: the next host: a frozen (SIGSTOPped) member keeps its TCP connections open,
#: and gRPC's keepalive took 60-70 s to declare it dead
TIMEOUTS_BEFORE_FAIL_OVER = 2

_RETRY_MIN = 0.05
_RETRY_MAX = 1.0

_CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    aetcd.ClientError,
    aetcd.rpc.RpcError,
    aetcd.rpc.BaseError,
)


class _Client(aetcd.Client):  # type: ignore[misc]
    """aetcd's client, over TLS when given ``credentials``, and able to log in
    again when etcd forgets its auth token.

    aetcd 1.0 opens only plain channels, so :meth:`connect` is aetcd's own with
    a secure channel; everything else is aetcd's. etcd's simple auth tokens
    lapse after ``--auth-token-ttl`` (5 min) without use: a call then fails
    with "invalid auth token", and :meth:`log_in` gets a new one for the
    calls and watches that follow."""

    def __init__(self, *args: Any, credentials: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._credentials is None:
            return await super().connect()  # type: ignore[no-any-return]
        if self._connected.is_set():
            return None
        if self._is_connecting:  # type: ignore[has-type]
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return None
        rpc = aetcd.rpc
        try:
            self._is_connecting = True
            self.channel = rpc.secure_channel(f"{self._host}:{self._port}", self._credentials,
                                              options=self._options.items())
            try:
                await self._authenticate()
            except rpc.AioRpcError as exc:
                aetcd.exceptions._handle_exception(exc)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                                  metadata=self.metadata)  # type: ignore[has-type]
            self._connected.set()
        finally:
            self._is_connecting = False
        return None

    async def _authenticate(self) -> None:
        if self._username is None or self._password is None:
            return
        self.auth_stub = aetcd.rpc.AuthStub(self.channel)
        request = aetcd.rpc.AuthenticateRequest(name=self._username, password=self._password)
        resp = await self.auth_stub.Authenticate(request, timeout=self._timeout)
        self.metadata = (("token", resp.token),)
        if self._watcher is not None:
            self._watcher._metadata = self.metadata

    async def log_in(self) -> None:
        """Get a new auth token (the old one lapsed); calls made after use it."""
        try:
            await self._authenticate()
        except aetcd.rpc.AioRpcError as exc:
            aetcd.exceptions._handle_exception(exc)


def _rpc_status(exc: BaseException) -> tuple[Any, str]:
    """The gRPC status code and details behind an aetcd or gRPC error."""
    for err in (exc, exc.__cause__):
        if isinstance(err, aetcd.rpc.AioRpcError):
            return err.code(), str(err.details() or err.code().name)
    return None, str(exc) or type(exc).__name__


def _bus_key(kv: Any) -> str:
    return bytes(kv.key[len(ROOT) :]).decode()


class _RangeGuess:
    """Guesses where the next page of a scan ends, reading keys under ``base``
    as big-endian numbers (key order is number order). After a full page it
    looks :attr:`AHEAD` times that page's key span past its last key; after a
    range that held less than a page, :attr:`GROW` times further than the last
    guess. A guess is only ever a range end below ``end``, and it is ``end``
    when nothing better is known."""

    AHEAD = 16
    GROW = 16

    def __init__(self, base: bytes, end: bytes) -> None:
        self._base = base
        self._end = end
        self._width = 0  # bytes of key (after base) the numbers are made of
        self._step = 0

    def _number(self, key: bytes) -> int:
        tail = key[len(self._base) : len(self._base) + self._width]
        return int.from_bytes(tail.ljust(self._width, b"\0"), "big")

    def _stop(self, number: int, start: bytes) -> bytes:
        if number >= 256**self._width:
            return self._end
        stop = self._base + number.to_bytes(self._width, "big")
        return stop if start < stop < self._end else self._end

    def after_page(self, first: bytes, last: bytes, start: bytes) -> bytes:
        self._width = max(self._width, len(first) - len(self._base), len(last) - len(self._base))
        high = self._number(last)
        self._step = self.AHEAD * max(high - self._number(first), 1)
        return self._stop(high + self._step, start)

    def after_range(self, start: bytes) -> bytes:
        self._step *= self.GROW
        return self._stop(self._number(start) + self._step, start)


class _Follower:
    """Keeps one etcd prefix watch alive from a revision on, across lost
    connections and server restarts, until closed.

    Each event goes to ``on_event`` in revision order; a final error (history
    compacted, or anything that is not a connection problem) goes to
    ``on_error`` and stops it.
    """

    def __init__(
        self,
        bus: EtcdBus,
        key_prefix: bytes,
        what: str,
        on_event: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._bus = bus
        self._key_prefix = key_prefix
        self._what = what
        #: where events and the final error go (a lingering subscription's watch changes hands)
        self.on_event = on_event
        self.on_error = on_error
        self.next_revision = 1
        self._watch: Any = None
        self._watch_client: Any = None
        self._task: asyncio.Task[None] | None = None

    def following(self) -> bool:
        """Whether it still follows its watch (not closed, not failed for good)."""
        return self._task is not None and not self._task.done()

    async def start(self, revision: int) -> None:
        """Establish the watch now (errors raise here), then follow it."""
        self.next_revision = revision
        await self._create()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"infrafabric-etcd-watch {self._what!r}"
        )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        watch, self._watch = self._watch, None
        if watch is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await watch.cancel()

    async def _create(self) -> None:
        client = self._watch_client = self._bus._live_client()
        generation = self._bus._watch_generation
        with self._bus._translate("watch", self._what, client):
            # No deadline of ours here: aetcd's own (the bus timeout) runs from when this
            # creation is sent, not while it waits behind others (aetcd sends one at a time;
            # a burst of subscriptions would otherwise time out in the queue, and each
            # timeout would start the stream afresh under all of them).
            try:
                self._watch = await client.watch_prefix(
                    self._key_prefix, start_revision=self.next_revision
                )
            except aetcd.exceptions.WatchTimeoutError:
                await self._bus._reset_watches(client, generation)
                raise

    async def _run(self) -> None:
        delay = _RETRY_MIN
        while True:
            try:
                if self._watch is None:
                    await self._create()
                    delay = _RETRY_MIN
                with self._bus._translate("watch", self._what, self._watch_client):
                    async for event in self._watch:
                        self.next_revision = int(event.kv.mod_revision) + 1
                        self.on_event(event)
                # A normal end means the client was closed under the watch
                # (moved to another host): follow on the current client.
            except (BusUnavailableError, BusTimeoutError) as exc:
                if self._bus._client is None:  # the bus was closed under us
                    self._watch = None
                    self.on_error(exc)
                    return
            except BusError as exc:
                if isinstance(exc, CompactedError) or self._watch_client is self._bus._client:
                    self._watch = None
                    self.on_error(exc)
                    return
                # any other failure of a client that was replaced meanwhile: retry
            self._watch = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)


class _EtcdWatch(Watch):
    """A :class:`Watch` over an etcd prefix watch that survives reconnects."""

    def __init__(self, bus: EtcdBus, prefix: str, start_revision: int | None) -> None:
        super().__init__(bus, prefix, start_revision)
        self._etcd = bus
        self._explicit_start = start_revision is not None
        self._follower = _Follower(
            bus,
            ROOT + self._physical_prefix.encode(),
            self._physical_prefix,
            self._on_event,
            self._fail,
        )

    def _on_event(self, event: Any) -> None:
        kv = event.kv
        if event.kind == aetcd.EventKind.PUT:
            self._feed_physical(EventKind.PUT, _bus_key(kv), bytes(kv.value), int(kv.mod_revision))
        else:
            self._feed_physical(EventKind.DELETE, _bus_key(kv), None, int(kv.mod_revision))

    async def _open_from(self, revision: int) -> None:
        if self._explicit_start:
            await self._etcd._check_kept(revision, self._physical_prefix)
        await self._follower.start(revision)

    async def _close(self) -> None:
        await self._follower.close()


class _EtcdSubscription(Subscription):
    """A :class:`Subscription` over a watch of the subject's message keys.

    Closed, its watch lingers on the bus for :data:`LINGER` seconds, dropping
    what it receives, and the subject's next subscription takes it over
    instead of creating one: an agent that waits for pushes again and again
    would otherwise create a watch each time, and aetcd creates them one at a
    time on a shared stream (a thousand agents' creations queued past their
    deadline, and each timeout restarts the stream under all of them)."""

    def __init__(self, bus: EtcdBus, subject: str) -> None:
        super().__init__(bus, subject)
        self._etcd = bus
        self._last = 0
        self._prefix = bus._pubsub_prefix(bus._ns(subject))
        self._follower = _Follower(bus, self._prefix, bus._ns(subject), self._on_event, self._fail)

    def _on_event(self, event: Any) -> None:
        revision = int(event.kv.mod_revision)
        # Deletes are lease expiries; a resumed watch may repeat a revision.
        if event.kind != aetcd.EventKind.PUT or revision <= self._last:
            return
        self._last = revision
        self._feed(Message(self.subject, bytes(event.kv.value)))

    async def _open(self) -> None:
        kept = self._etcd._lingering.pop(self._prefix, None)
        if kept is not None:
            follower, timer = kept
            timer.cancel()
            if follower.following():
                # live and in revision order: what it delivers from now on is kept, and of it
                # what has a revision past the one read now (as a new watch would start there)
                arrived: list[Any] = []
                follower.on_event, follower.on_error = arrived.append, self._fail
                self._follower = follower
                try:
                    self._last = await self._etcd._current_revision()
                except BaseException:
                    await follower.close()  # (not started: nobody else would close it)
                    raise
                follower.on_event = self._on_event
                for event in arrived:
                    self._on_event(event)
                return
            await follower.close()
        self._last = await self._etcd._current_revision()
        await self._follower.start(self._last + 1)

    async def _close(self) -> None:
        follower = self._follower
        if not follower.following() or self._etcd._client is None or self._prefix in self._etcd._lingering:
            await follower.close()
            return
        follower.on_event = _drop
        follower.on_error = lambda _exc: self._etcd._forget_lingering(self._prefix, follower)
        timer = asyncio.get_running_loop().call_later(
            LINGER, self._etcd._forget_lingering, self._prefix, follower)
        self._etcd._lingering[self._prefix] = (follower, timer)


def _drop(_event: Any) -> None:
    """What a lingering subscription watch does with a message: nobody listens."""


class EtcdBus(EventBus):
    """etcd v3 implementation of :class:`~infrafabric.bus.EventBus`."""

    scheme = "etcd"

    def __init__(self, url: BusURL) -> None:
        super().__init__(url)
        self._client: Any = None
        self._host_index = 0
        #: bumped by each reset of the watch stream (see :meth:`_reset_watches`)
        self._watch_generation = 0
        #: calls in a row on the current client that missed their deadline
        self._timeouts = 0
        self._pubsub_ttl = url.int_option("pubsub_ttl", 30)
        self.security = Security.from_options("etcd", url.options)
        self._credentials = None
        if self.security.tls:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=self.security.pem("ca"), private_key=self.security.pem("key"),
                certificate_chain=self.security.pem("cert"))
        self._logging_in: asyncio.Task[None] | None = None
        self._connect_timeout = url.float_option("connect_timeout", self.timeout)
        self._lease_lock = asyncio.Lock()
        self._lease_id: int | None = None
        self._lease_renew_at = 0.0
        self._closing: set[asyncio.Task[None]] = set()
        #: closed subscriptions' watches, by message prefix, until taken over or LINGER passes
        self._lingering: dict[bytes, tuple[_Follower, asyncio.TimerHandle]] = {}

    # -- connection ------------------------------------------------------

    def _new_client(self, index: int) -> Any:
        host, port = self.url.hosts[index]
        return _Client(host, port, username=self.security.user, password=self.security.password,
                       timeout=self.timeout, options=_GRPC_OPTIONS, credentials=self._credentials)

    def _hosts_text(self) -> str:
        return ", ".join(f"{h}:{p}" for h, p in self.url.hosts)

    def _hint(self) -> str:
        return f"is etcd running at {self._hosts_text()}? set IF_BUS_URL to a reachable etcd"

    async def _connect(self) -> None:
        failure: BaseException | None = None
        for index in range(len(self.url.hosts)):
            client = self._new_client(index)
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await client.get_range(_NOWHERE, _NOWHERE_END)
            except _CLIENT_ERRORS as exc:
                failure = exc
                await self._close_client(client)
                continue
            self._client, self._host_index = client, index
            return
        assert failure is not None  # url.hosts is never empty
        reason = (
            f"no answer within {self._connect_timeout:g} s"
            if isinstance(failure, TimeoutError)
            else _rpc_status(failure)[1]
        )
        refused = access_failure(str(self.url), self.security, reason)
        if refused is not None:
            raise refused from failure
        raise BusUnavailableError(
            f"cannot connect to {self.url}: {reason}", hint=self._hint()
        ) from failure

    def _live_client(self) -> Any:
        if self._client is None:
            raise BusUnavailableError(f"the bus {self.url} is not connected")
        return self._client

    def _fail_over(self, failed: Any) -> None:
        """After a connection failure on ``failed``, move to the next host (if
        the URL names several); the calls in flight on it fail, the next ones
        and every watch go to the new host."""
        if len(self.url.hosts) < 2 or failed is None or failed is not self._client:
            return
        self._host_index = (self._host_index + 1) % len(self.url.hosts)
        self._client = self._new_client(self._host_index)
        self._timeouts = 0
        task = asyncio.get_running_loop().create_task(self._close_client(failed))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _missed_deadline(self, client: Any) -> None:
        """Count a call on ``client`` that got no answer in time; after
        :data:`TIMEOUTS_BEFORE_FAIL_OVER` in a row, move to the next host."""
        if client is None or client is not self._client:
            return
        self._timeouts += 1
        if self._timeouts >= TIMEOUTS_BEFORE_FAIL_OVER:
            self._fail_over(client)

    async def _close_client(self, client: Any) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await client.close()

    async def _close(self) -> None:
        lingering, self._lingering = self._lingering, {}
        for follower, timer in lingering.values():
            timer.cancel()
            await follower.close()
        client, self._client = self._client, None
        self._lease_id = None
        if client is not None:
            await self._close_client(client)
        if self._closing:
            await asyncio.wait(set(self._closing))

    # -- error translation (the one place) --------------------------------

    @contextlib.contextmanager
    def _translate(
        self, op: str, key: str, client: Any = None, *, write: bool = False
    ) -> Iterator[None]:
        """Turn aetcd and gRPC errors into the InfraFabric tree, chained.
        ``key`` is the physical key (or prefix, or subject) of the call."""
        started = time.monotonic()
        try:
            yield
            if client is not None and client is self._client:
                self._timeouts = 0  # the member answered
        except InfraFabricError:
            raise
        except _CLIENT_ERRORS as exc:
            raise self._translated(op, key, client, write, exc) from exc
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                # A real cancellation: the caller's, or the bus deadline's (which
                # usually fires before gRPC's own, set to the same timeout).
                if op != "watch" and time.monotonic() - started >= 0.9 * self.timeout:
                    self._missed_deadline(client)
                raise
            # gRPC ends every call of a channel closed under it with a bare
            # CancelledError: a fail-over (or close) replaced the client mid-call.
            raise self._translated(op, key, client, write, exc) from exc

    def _translated(
        self, op: str, key: str, client: Any, write: bool, exc: BaseException
    ) -> BusError:
        code, details = _rpc_status(exc)
        codes = aetcd.rpc.StatusCode
        if key.startswith(f"{self.namespace}/"):
            key = self._strip_ns(key)
        where = f"{op} {key!r}"
        if isinstance(exc, asyncio.CancelledError):
            if write:
                return BusTimeoutError(
                    f"{where}: the connection to etcd at {self.url} was closed during the call "
                    "(the client moved to another member); the outcome is unknown",
                    hint="read the state back before retrying a write",
                )
            return BusUnavailableError(
                f"{where}: the connection to etcd at {self.url} was closed during the call "
                "(the client moved to another member)",
                hint="retry: the next call goes to the new member",
            )
        if isinstance(exc, TimeoutError):
            # an inner deadline: the caller's own arrives here as CancelledError
            self._missed_deadline(client)
            return BusTimeoutError(
                f"{where} on {self.url} got no answer in time; the outcome is unknown",
                hint="read the state back before retrying a write",
            )
        if "invalid auth token" in details and isinstance(client, _Client) and self.security.user:
            # etcd forgot the token (unused for --auth-token-ttl): log in again for the next call;
            # this one was refused, so nothing was applied
            if self._logging_in is None or self._logging_in.done():
                self._logging_in = asyncio.get_running_loop().create_task(client.log_in())
            return BusUnavailableError(f"{where}: etcd at {self.url} no longer knows this client's auth "
                                       "token; logging in again", hint="retry: nothing was applied")
        refused = access_failure(str(self.url), self.security, details)
        if refused is not None and code in (codes.UNAUTHENTICATED, codes.PERMISSION_DENIED,
                                            codes.INVALID_ARGUMENT, codes.FAILED_PRECONDITION):
            return refused
        if isinstance(exc, aetcd.RevisionCompactedError) or (
            code == codes.OUT_OF_RANGE and "compacted" in details
        ):
            return CompactedError(
                f"{where}: etcd at {self.url} no longer keeps that revision ({details})",
                hint="start again from a recent revision (bus.revision())",
            )
        if isinstance(exc, aetcd.ConnectionTimeoutError | aetcd.WatchTimeoutError) or (
            code == codes.DEADLINE_EXCEEDED
        ):
            self._missed_deadline(client)
            return BusTimeoutError(
                f"{where} on {self.url} missed its deadline ({details}); the outcome is unknown",
                hint="read the state back before retrying a write",
            )
        if isinstance(exc, aetcd.ConnectionFailedError) or code in (
            codes.UNAVAILABLE,
            codes.CANCELLED,
        ):
            self._fail_over(client)
            if write and not any(s in details.lower() for s in _NEVER_SENT):
                # The request may have reached etcd before the connection broke.
                return BusTimeoutError(
                    f"{where}: the connection to etcd at {self.url} broke during the call "
                    f"({details}); the outcome is unknown",
                    hint="read the state back before retrying a write",
                )
            return BusUnavailableError(
                f"{where}: etcd at {self.url} is unreachable ({details})", hint=self._hint()
            )
        return BusError(f"{where} on {self.url} failed: {details}")

    # -- key/value -------------------------------------------------------

    @staticmethod
    def _key(physical: str) -> bytes:
        return ROOT + physical.encode()

    async def _get(self, key: str) -> Entry | None:
        client = self._live_client()
        with self._translate("get", key, client):
            kv = await client.get(self._key(key))
        return None if kv is None else Entry(key, bytes(kv.value), int(kv.mod_revision))

    async def _put(self, key: str, value: bytes) -> int:
        client = self._live_client()
        with self._translate("put", key, client, write=True):
            resp = await client.put(self._key(key), value)
        return int(resp.header.revision)

    async def _txn_put(self, op: str, key: str, value: bytes, compare: Any, client: Any) -> int | None:
        with self._translate(op, key, client, write=True):
            ok, responses = await client.transaction(
                compare=[compare],
                success=[client.transactions.put(self._key(key), value)],
                failure=[],
            )
        return int(responses[0].response_put.header.revision) if ok else None

    async def _create(self, key: str, value: bytes) -> int | None:
        client = self._live_client()
        compare = client.transactions.version(self._key(key)) == 0
        return await self._txn_put("create", key, value, compare, client)

    #: etcd refuses a transaction of more operations (``--max-txn-ops``, 128 by default)
    batch_limit = 128

    async def _create_many(self, items: Sequence[tuple[str, bytes]]) -> list[int | None]:
        client = self._live_client()
        with self._translate("create", f"{len(items)} keys", client, write=True):
            ok, responses = await client.transaction(
                compare=[client.transactions.version(self._key(k)) == 0 for k, _ in items],
                success=[client.transactions.put(self._key(k), v) for k, v in items],
                failure=[],
            )
        if ok:  # one transaction: one revision for all of them
            revision = int(responses[0].response_put.header.revision)
            return [revision] * len(items)
        # some key exists: learn which, one create each (the others are created)
        return list(await asyncio.gather(*(self._create(k, v) for k, v in items)))

    async def _which_exist(self, keys: Sequence[str]) -> set[str]:
        client = self._live_client()
        # one read-only transaction of a range per key: one round trip, one revision for all
        with self._translate("get", f"{len(keys)} keys", client):
            _ok, responses = await client.transaction(
                compare=[], success=[client.transactions.get(self._key(k)) for k in keys], failure=[])
        return {k for k, found in zip(keys, responses, strict=True) if found}

    async def _update(self, key: str, value: bytes, revision: int) -> int | None:
        client = self._live_client()
        # An absent key has mod_revision 0, so this never matches a deleted key.
        compare = client.transactions.mod(self._key(key)) == revision
        return await self._txn_put("update", key, value, compare, client)

    async def _delete(self, key: str, revision: int | None) -> bool:
        client = self._live_client()
        with self._translate("delete", key, client, write=True):
            if revision is None:
                return await client.delete(self._key(key)) is not None
            ok, responses = await client.transaction(
                compare=[client.transactions.mod(self._key(key)) == revision],
                success=[client.transactions.delete(self._key(key))],
                failure=[],
            )
        return bool(ok) and int(responses[0].response_delete_range.deleted) > 0

    async def _list(self, prefix: str) -> list[Entry]:
        client = self._live_client()
        with self._translate("list", prefix, client):
            found = await client.get_prefix(self._key(prefix))
        return [Entry(_bus_key(kv), bytes(kv.value), int(kv.mod_revision)) for kv in found]

    async def _scan(self, prefix: str, batch: int) -> AsyncGenerator[Entry, None]:
        """Page through the prefix in key order, at most ``batch`` keys per
        Range request, every page read at the revision of the first one (a
        snapshot: a write made during the scan is not seen, and a compaction
        of that revision fails the scan with CompactedError).

        aetcd's ``get_range`` drops ``limit`` and ``revision``, so this builds
        the RangeRequest itself and calls the KV stub (as ``_check_kept``).

        etcd counts every key from a request's start to its range end, even
        with a limit, so paging to the end of the prefix every time would make
        a scan quadratic (each page would count every key after it). Each page after
        the first asks instead for a range that ends at a guess
        (:class:`_RangeGuess`) of where a few pages' worth of keys end. The
        ranges tile the prefix, so a bad guess costs a request or some
        counting, never a key."""
        base = self._key(prefix)
        end = aetcd.utils.prefix_range_end(base)
        start, stop = base, end
        guess = _RangeGuess(base, end)
        revision = 0  # the first page reads the latest; the others pin its revision
        while True:
            request = aetcd.rpc.RangeRequest(
                key=start, range_end=stop, limit=batch, revision=revision
            )
            client = self._live_client()
            async with asyncio.timeout(self.timeout):
                with self._translate("scan", prefix, client):
                    await client.connect()
                    resp = await client.kvstub.Range(
                        request, timeout=self.timeout, metadata=client.metadata
                    )
            if not revision:
                revision = int(resp.header.revision)
            kvs = resp.kvs
            for kv in kvs:
                yield Entry(_bus_key(kv), bytes(kv.value), int(kv.mod_revision))
            if resp.more:  # a full page: go on after its last key
                first, last = bytes(kvs[0].key), bytes(kvs[-1].key)
                start = last + b"\0"
                stop = guess.after_page(first, last, start)
            elif stop == end:
                return
            else:  # all of [start, stop) was read: go on from stop
                start, stop = stop, guess.after_range(stop)

    async def _current_revision(self) -> int:
        client = self._live_client()
        with self._translate("revision", "", client):
            resp = await client.get_range(_NOWHERE, _NOWHERE_END)
        return int(resp.header.revision)

    async def _check_kept(self, revision: int, prefix: str) -> None:
        """Raise CompactedError now if etcd no longer keeps ``revision``
        (otherwise the watch would only fail on its first read)."""
        client = self._live_client()
        with self._translate("watch", prefix, client):
            await client.connect()
            request = aetcd.rpc.RangeRequest(key=_NOWHERE, revision=revision, count_only=True)
            try:
                await client.kvstub.Range(request, timeout=self.timeout)
            except aetcd.rpc.AioRpcError as exc:
                if not (
                    exc.code() == aetcd.rpc.StatusCode.OUT_OF_RANGE
                    and "future revision" in str(exc.details())
                ):
                    raise

    def _watch(self, prefix: str, start_revision: int | None) -> Watch:
        return _EtcdWatch(self, prefix, start_revision)

    # -- pub/sub ---------------------------------------------------------

    @staticmethod
    def _pubsub_prefix(physical_subject: str) -> bytes:
        # '#' is not in the key grammar, so this prefix matches the subject's
        # own messages and none of a longer subject's (``S/x``).
        return PUBSUB_ROOT + physical_subject.encode() + b"/#"

    async def _pubsub_lease(self, client: Any) -> int:
        if self._lease_id is None or time.monotonic() >= self._lease_renew_at:
            async with self._lease_lock:
                if self._lease_id is None or time.monotonic() >= self._lease_renew_at:
                    granted_at = time.monotonic()
                    lease = await client.lease(self._pubsub_ttl)
                    self._lease_id = int(lease.id)
                    self._lease_renew_at = granted_at + int(lease.ttl) / 2
        assert self._lease_id is not None
        return self._lease_id

    async def _publish(self, subject: str, data: bytes) -> None:
        client = self._live_client()
        key = self._pubsub_prefix(subject) + uuid.uuid4().hex.encode()
        with self._translate("publish", subject, client, write=True):
            try:
                await client.put(key, data, lease=await self._pubsub_lease(client))
            except aetcd.ClientError as exc:
                if "lease not found" not in str(exc):
                    raise
                # revoked, or expired early while etcd was down: take a new one
                self._lease_id = None
                await client.put(key, data, lease=await self._pubsub_lease(client))

    async def _reset_watches(self, client: Any, generation: int) -> None:
        """Start the client's watch stream afresh after a watch creation timed
        out. aetcd multiplexes watches on one stream and gives a creation the
        first "created" answer that comes back: the late answer to a creation
        that timed out (a server restarting) would be taken by the next one,
        which would then follow another prefix from another revision and never
        see its own events. A new stream carries no late answers; every watch
        on the old one ends and its follower re-creates it from the revision
        after the last it delivered, so nothing is lost. ``generation``: the
        one the failed creation started in (a reset since then already did it)."""
        if generation != self._watch_generation:
            return
        self._watch_generation += 1
        watcher = getattr(client, "_watcher", None)
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.shutdown()

    def _subscribe(self, subject: str) -> Subscription:
        return _EtcdSubscription(self, subject)

    def _forget_lingering(self, prefix: bytes, follower: _Follower) -> None:
        """Close a lingering subscription watch (its time is up, or it failed)."""
        if self._lingering.get(prefix, (None,))[0] is follower:
            _, timer = self._lingering.pop(prefix)
            timer.cancel()
        task = asyncio.ensure_future(follower.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- health ----------------------------------------------------------

    async def _health(self) -> str:
        client = self._live_client()
        with self._translate("health", "", client):
            await client.connect()
            status = await client.maintenancestub.Status(
                aetcd.rpc.StatusRequest(), timeout=self.timeout
            )
        host, port = self.url.hosts[self._host_index]
        if not status.leader:  # a member without a leader still answers reads
            raise BusUnavailableError(
                f"the bus {self.url} has lost its quorum: {host}:{port} has no leader; "
                "writes will time out", hint="restart the failed members (their data is on disk)")
        return (
            f"etcd {status.version} at revision {status.header.revision}, "
            f"leader {status.leader:x} (via {host}:{port})"
        )
