"""``ifctl bench bus``: our :class:`~infrafabric.bus.EventBus` against the raw
engine client, in the same run, on the same server.

What is measured (every latency: ``n`` samples after ``warmup`` discarded
ones, one request at a time):

* **create (win)**: create a key that does not exist.
* **create (lose)**: create a key that exists (the losing side of a claim).
* **update**: compare-and-swap at the key's current revision.
* **put→watch**: from just before a put until an already open watch, in the
  same process, yields the event.
* **publish→subscribe**: across processes. A subscriber subprocess
  (:mod:`infrafabric.bench._subscriber`) reports when each message reached
  it; the publisher embeds ``time.monotonic_ns()`` in the message, and
  CLOCK_MONOTONIC is one system-wide clock on Linux, so receive - send is a
  valid latency. A ``ready`` line plus a ping handshake guarantee nothing is
  sent before the subscription is live; the next message is sent only after
  the previous one arrived (plus a pause of ``pace_ms``), so the figure is
  latency, not queueing. ``memory://`` lives in one process, so there it is
  measured within the process.
* **throughput**: creates per second with ``inflight`` of them in flight,
  ``n`` per side, in segments alternating ours/raw (ABBA ABBA ...), and the
  CPU time this (client) process spent per create, which is what limits a
  Python client and is far less sensitive to other load than ops/s.

"Raw" is the engine's own Python client called directly on the same server
over its own connection, with no InfraFabric code: nats-py (KV on a separate
bucket copied from ours, core NATS for pub/sub) or aetcd (transactions,
put, watch). ``memory://`` has no raw client; its raw figures are ``None``.
Samples of ours and raw are interleaved (alternating which goes first), so
drift on a shared machine hits both alike. ``ratio`` is ours / raw: for
latencies on p50, for throughput raw ops/s / ours ops/s, so above 1 always
means ours is slower. A benchmark reports; it never fails because of timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from infrafabric.bench._common import (
    BenchError,
    Progress,
    default_warmup,
    interleaved,
    latency_entry,
    machine_info,
    metric_value,
    nats_scope,
    raw_client_errors,
    segmented_throughput,
    started_at,
    target_row,
    throughput_rounds,
    version,
)
from infrafabric.bench._delivery import InProcessReceiver, ProcessReceiver, Receiver
from infrafabric.bench._wire import encode, parse
from infrafabric.bench.stats import QUANTILE_METHOD, ratio
from infrafabric.bus import EventBus, connect, parse_url
from infrafabric.bus.base import EventKind, Message, Subscription
from infrafabric.bus.keys import to_tokens
from infrafabric.bus.url import BusURL

__all__ = [
    "OPERATIONS",
    "TARGETS",
    "BenchError",
    "Driver",
    "Progress",
    "RawEtcdDriver",
    "RawNatsDriver",
    "bench_bus",
    "connect_raw",
    "default_warmup",
    "open_raw",
    "throughput_rounds",
]

PAYLOAD = b'{"bench":"value","pad":"' + b"x" * 38 + b'"}'  # 64 bytes
PAYLOAD2 = PAYLOAD.replace(b"value", b"VALUE")

#: operation id -> (label, what is timed)
OPERATIONS: dict[str, tuple[str, str]] = {
    "create_win": ("create (win)", "create of a key that does not exist"),
    "create_lose": ("create (lose)", "create of a key that exists; must return None"),
    "update": ("update (CAS)", "compare-and-swap at the key's current revision"),
    "put_watch": ("put→watch", "put until an open watch in the same process yields the event"),
    "pubsub": ("publish→subscribe", "publish until a subscriber in another process has it"),
    "throughput": ("throughput", "creates per second with `inflight` in flight"),
}

#: (id, operation, metric, threshold, description)
TARGETS: list[tuple[str, str, str, float, str]] = [
    ("create_win_ratio", "create_win", "ratio", 1.2,
     "CAS create (win) p50 <= 1.2x the raw client p50"),
    ("update_ratio", "update", "ratio", 1.2,
     "CAS update p50 <= 1.2x the raw client p50"),
    ("pubsub_p99", "pubsub", "ours.p99", 2.0,
     "publish→subscribe across processes p99 <= 2 ms"),
]


# -- the two sides -----------------------------------------------------------


class KeyStream(ABC):
    """Keys of the PUT events seen by an open watch."""

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[str]: ...

    @abstractmethod
    async def close(self) -> None: ...


class Driver(ABC):
    """One side of the comparison: the same operations, through different code."""

    side: str
    calls: dict[str, str]

    def __init__(self, run: str, timeout: float) -> None:
        self.run = run
        self.timeout = timeout

    @abstractmethod
    def key(self, kind: str, i: int) -> str:
        """The key of sample ``i`` of ``kind``, as this side's watch reports it."""

    @abstractmethod
    async def create(self, kind: str, i: int, value: bytes = PAYLOAD) -> int | None: ...

    @abstractmethod
    async def update(self, kind: str, i: int, revision: int,
                     value: bytes = PAYLOAD2) -> int | None: ...

    @abstractmethod
    async def put(self, kind: str, i: int) -> None: ...

    @abstractmethod
    async def watch(self, kind: str) -> KeyStream:
        """An established watch of every key of ``kind``."""

    @property
    @abstractmethod
    def subject(self) -> str: ...

    @abstractmethod
    async def publish(self, data: bytes) -> None: ...

    @abstractmethod
    def subscriber(self) -> tuple[str, str, str] | None:
        """(mode, url, subject) for the subscriber process, or None for in-process."""

    async def in_process_subscription(self) -> Subscription:
        raise NotImplementedError

    def spec(self) -> dict[str, Any] | None:
        """What :func:`connect_raw` needs to open this side again in another
        process (None: it cannot be, e.g. ours on memory://)."""
        return None

    async def close(self, cleanup: bool) -> None:  # noqa: B027 - optional hook
        """Remove what the benchmark wrote (if ``cleanup``) and disconnect."""


class _BusKeys(KeyStream):
    def __init__(self, watch: Any) -> None:
        self._watch = watch

    async def __aiter__(self) -> AsyncIterator[str]:
        async for event in self._watch:
            if event.kind is EventKind.PUT:
                yield event.key

    async def close(self) -> None:
        await self._watch.close()


class OursDriver(Driver):
    """Our EventBus, through its public API."""

    side = "ours"

    def __init__(self, bus: EventBus, url: str, run: str, timeout: float) -> None:
        super().__init__(run, timeout)
        self.bus = bus
        self.url = url
        self.calls = {
            "create_win": "bus.create(key, value)",
            "create_lose": "bus.create(key, value) -> None",
            "update": "bus.update(key, value, revision)",
            "put_watch": "bus.put(key, value) + bus.watch(prefix)",
            "pubsub": "bus.publish(subject, data) + bus.subscribe(subject) in another process",
            "throughput": "bus.create(key, value)",
        }
        if bus.scheme == "memory":
            self.calls["pubsub"] = "bus.publish(subject, data) + bus.subscribe(subject), in-process"

    def key(self, kind: str, i: int) -> str:
        return f"bench/{self.run}/{kind}/{i}"

    async def create(self, kind: str, i: int, value: bytes = PAYLOAD) -> int | None:
        return await self.bus.create(self.key(kind, i), value)

    async def update(self, kind: str, i: int, revision: int,
                     value: bytes = PAYLOAD2) -> int | None:
        return await self.bus.update(self.key(kind, i), value, revision)

    async def put(self, kind: str, i: int) -> None:
        await self.bus.put(self.key(kind, i), PAYLOAD)

    async def watch(self, kind: str) -> KeyStream:
        w = self.bus.watch(f"bench/{self.run}/{kind}/")
        await w.start()
        return _BusKeys(w)

    @property
    def subject(self) -> str:
        return f"bench/{self.run}/ps"

    async def publish(self, data: bytes) -> None:
        await self.bus.publish(self.subject, data)

    def subscriber(self) -> tuple[str, str, str] | None:
        if self.bus.scheme == "memory":
            return None
        return ("ours", self.url, self.subject)

    async def in_process_subscription(self) -> Subscription:
        return await self.bus.subscribe(self.subject).start()

    async def close(self, cleanup: bool) -> None:
        if not cleanup:
            return
        entries = await self.bus.list(f"bench/{self.run}/")
        sem = asyncio.Semaphore(64)

        async def drop(key: str) -> None:
            async with sem:
                await self.bus.delete(key)

        await asyncio.gather(*(drop(e.key) for e in entries))


class _NatsKeys(KeyStream):
    def __init__(self, watcher: Any) -> None:
        self._watcher = watcher

    async def __aiter__(self) -> AsyncIterator[str]:
        async for entry in self._watcher:
            if entry is not None and entry.operation is None:
                yield str(entry.key)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._watcher.stop()


class RawNatsDriver(Driver):
    """nats-py called directly: KV on a separate bucket with our bucket's
    settings, core NATS publish/subscribe."""

    side = "raw"

    def __init__(self, nc: Any, kv: Any, bucket: str, server_url: str, run: str,
                 timeout: float) -> None:
        super().__init__(run, timeout)
        self.nc = nc
        self.kv = kv
        self.bucket = bucket
        self.server_url = server_url
        self.calls = {
            "create_win": "kv.create(key, value)",
            "create_lose": "kv.create(key, value) -> KeyWrongLastSequenceError",
            "update": "kv.update(key, value, last=revision)",
            "put_watch": "kv.put(key, value) + kv.watch(filter)",
            "pubsub": "nc.publish(subject, data) + nc.subscribe(subject) in another process",
            "throughput": "kv.create(key, value)",
        }

    def key(self, kind: str, i: int) -> str:
        return f"bench.{self.run}.{kind}.{i}"

    async def create(self, kind: str, i: int, value: bytes = PAYLOAD) -> int | None:
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            async with asyncio.timeout(self.timeout):
                return int(await self.kv.create(self.key(kind, i), value))
        except KeyWrongLastSequenceError:
            return None

    async def update(self, kind: str, i: int, revision: int,
                     value: bytes = PAYLOAD2) -> int | None:
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            async with asyncio.timeout(self.timeout):
                return int(await self.kv.update(self.key(kind, i), value, last=revision))
        except KeyWrongLastSequenceError:
            return None

    async def put(self, kind: str, i: int) -> None:
        async with asyncio.timeout(self.timeout):
            await self.kv.put(self.key(kind, i), PAYLOAD)

    async def watch(self, kind: str) -> KeyStream:
        async with asyncio.timeout(self.timeout):
            watcher = await self.kv.watch(f"bench.{self.run}.{kind}.>")
        return _NatsKeys(watcher)

    @property
    def subject(self) -> str:
        return f"ifbench.{self.run}.ps"

    async def publish(self, data: bytes) -> None:
        await self.nc.publish(self.subject, data)

    def subscriber(self) -> tuple[str, str, str] | None:
        return ("nats", self.server_url, self.subject)

    def spec(self) -> dict[str, Any] | None:
        return {"engine": "nats", "url": self.server_url, "bucket": self.bucket, "run": self.run}

    async def close(self, cleanup: bool) -> None:
        try:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout):
                    await self.nc.jetstream().delete_key_value(self.bucket)
        finally:
            await self.nc.close()


class _EtcdKeys(KeyStream):
    def __init__(self, watch: Any) -> None:
        self._watch = watch

    async def __aiter__(self) -> AsyncIterator[str]:
        async for event in self._watch:
            if event.kind == "PUT":
                yield bytes(event.kv.key).decode()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._watch.cancel()


class RawEtcdDriver(Driver):
    """aetcd called directly: txn with version == 0 (create), txn with
    mod_revision == rev (update), put, watch_prefix; pub/sub as a put of a
    fresh key with a lease, watched by prefix (how our etcd bus does it)."""

    side = "raw"
    ROOT = "if.bench-raw"  # '.' cannot occur in a namespace, so no clash with our keys
    #: pub/sub messages carry a lease, as our etcd bus's do (it expires them that way):
    #: a put with a lease costs etcd more than a bare put, and that is the engine's cost
    LEASE_TTL = 30

    def __init__(self, client: Any, url: str, run: str, timeout: float) -> None:
        super().__init__(run, timeout)
        self.client = client
        self.url = url
        self._published = 0
        self._lease: Any = None
        self._lease_renew_at = 0.0
        self.calls = {
            "create_win": "client.transaction([version(k) == 0], [put(k, v)])",
            "create_lose": "client.transaction([version(k) == 0], [put(k, v)]) -> not succeeded",
            "update": "client.transaction([mod(k) == revision], [put(k, v)])",
            "put_watch": "client.put(k, v) + client.watch_prefix(prefix)",
            "pubsub": "client.put(prefix + unique id, data, lease=lease) + "
                      "client.watch_prefix(prefix) in another process",
            "throughput": "client.transaction([version(k) == 0], [put(k, v)])",
        }

    def key(self, kind: str, i: int) -> str:
        return f"{self.ROOT}/{self.run}/{kind}/{i}"

    async def _txn(self, compare: Any, key: bytes, value: bytes) -> int | None:
        tx = self.client.transactions
        async with asyncio.timeout(self.timeout):
            ok, responses = await self.client.transaction(
                compare=[compare], success=[tx.put(key, value)], failure=[])
        if not ok:
            return None
        return int(responses[0].response_put.header.revision)

    async def create(self, kind: str, i: int, value: bytes = PAYLOAD) -> int | None:
        key = self.key(kind, i).encode()
        return await self._txn(self.client.transactions.version(key) == 0, key, value)

    async def update(self, kind: str, i: int, revision: int,
                     value: bytes = PAYLOAD2) -> int | None:
        key = self.key(kind, i).encode()
        return await self._txn(self.client.transactions.mod(key) == revision, key, value)

    async def put(self, kind: str, i: int) -> None:
        async with asyncio.timeout(self.timeout):
            await self.client.put(self.key(kind, i).encode(), PAYLOAD)

    async def watch(self, kind: str) -> KeyStream:
        async with asyncio.timeout(self.timeout):
            w = await self.client.watch_prefix(f"{self.ROOT}/{self.run}/{kind}/".encode())
        return _EtcdKeys(w)

    @property
    def subject(self) -> str:
        return f"{self.ROOT}/{self.run}/ps"

    async def publish(self, data: bytes) -> None:
        self._published += 1
        key = f"{self.subject}/{self._published}".encode()
        async with asyncio.timeout(self.timeout):
            if self._lease is None or time.monotonic() >= self._lease_renew_at:
                # a fresh lease every half TTL, as our bus does
                self._lease_renew_at = time.monotonic() + self.LEASE_TTL / 2
                self._lease = await self.client.lease(self.LEASE_TTL)
            await self.client.put(key, data, lease=self._lease)

    def subscriber(self) -> tuple[str, str, str] | None:
        return ("etcd", self.url, self.subject)

    def spec(self) -> dict[str, Any] | None:
        return {"engine": "etcd", "url": self.url, "run": self.run}

    async def close(self, cleanup: bool) -> None:
        try:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout):
                    if self._lease is not None:
                        await self._lease.revoke()
                    await self.client.delete_prefix(f"{self.ROOT}/{self.run}/".encode())
        finally:
            await self.client.close()


# -- opening the raw side ----------------------------------------------------


async def _find_nats_bucket(bus: EventBus, js: Any, probe_tokens: str) -> str | None:
    """The KV bucket our NATS bus writes to: its ``bucket`` attribute if it has
    one, else the bucket that holds the probe key we just created."""
    for attr in ("bucket", "bucket_name", "_bucket"):
        value = getattr(bus, attr, None)
        if isinstance(value, str) and value:
            return value
    from nats.js.errors import KeyNotFoundError, NotFoundError

    names = await js.streams_info()
    for info in names:
        name = info.config.name or ""
        if not name.startswith("KV_"):
            continue
        try:
            kv = await js.key_value(name[3:])
            await kv.get(probe_tokens)
        except (KeyNotFoundError, NotFoundError, Exception):
            continue
        return name[3:]
    return None


async def _open_raw_nats(parsed: BusURL, bus: EventBus, run: str, op_timeout: float,
                         benchmark: str) -> tuple[RawNatsDriver, dict[str, Any]]:
    import nats
    from nats.js import api

    from infrafabric.bus.nats import await_stream

    servers = [f"nats://{h}:{p}" for h, p in parsed.hosts]
    nc = await nats.connect(servers=servers, connect_timeout=op_timeout)
    try:
        js = nc.jetstream()
        probe = f"bench/{run}/probe"
        await bus.create(probe, PAYLOAD)
        tokens = to_tokens(f"{bus.namespace}/{probe}")
        our_bucket = await _find_nats_bucket(bus, js, tokens)
        raw_bucket = f"ifbench_{run}"
        info: dict[str, Any] = {"our_bucket": our_bucket, "raw_bucket": raw_bucket}
        if our_bucket is not None:
            si = await js.stream_info(f"KV_{our_bucket}")
            cfg = dataclasses.replace(
                si.config, name=f"KV_{raw_bucket}", subjects=[f"$KV.{raw_bucket}.>"],
                metadata=None, republish=None, mirror=None, sources=None,
                description=f"ifctl bench {benchmark}: raw client bucket (deleted after the run)",
            )
            await js.add_stream(cfg)
            info["bucket_settings"] = {
                "source": f"copied from KV_{our_bucket}",
                "storage": str(cfg.storage), "replicas": cfg.num_replicas,
                "history": cfg.max_msgs_per_subject, "allow_direct": cfg.allow_direct,
            }
        else:
            history = parsed.int_option("history", 1)
            replicas = parsed.int_option("replicas", 1)
            await js.create_key_value(api.KeyValueConfig(
                bucket=raw_bucket, history=history, replicas=replicas))
            info["bucket_settings"] = {
                "source": "our bucket not found; nats-py defaults with the URL's options",
                "storage": "file", "replicas": replicas, "history": history,
            }
        kv = await js.key_value(raw_bucket)
        # a fresh replicated stream refuses writes until its leader is known here
        await await_stream(js, f"$KV.{raw_bucket}._if.probe", op_timeout)
        v = nc.connected_server_version
        info["engine"] = {"name": "nats-server", "version": f"{v.major}.{v.minor}.{v.patch}",
                          "client": f"nats-py {version('nats-py')}"}
    except BaseException:
        await nc.close()
        raise
    return RawNatsDriver(nc, kv, raw_bucket, servers[0], run, op_timeout), info


async def _open_raw_etcd(parsed: BusURL, run: str,
                         op_timeout: float) -> tuple[RawEtcdDriver, dict[str, Any]]:
    import aetcd

    host, port = parsed.hosts[0]
    client = aetcd.Client(host, port)
    try:
        async with asyncio.timeout(op_timeout):
            await client.connect()
            status = await client.status()
    except BaseException:
        with contextlib.suppress(Exception):
            await client.close()
        raise
    info = {"engine": {"name": "etcd", "version": str(status.version),
                       "client": f"aetcd {version('aetcd')}"},
            "raw_prefix": f"{RawEtcdDriver.ROOT}/{run}/"}
    return RawEtcdDriver(client, f"etcd://{host}:{port}", run, op_timeout), info


async def open_raw(parsed: BusURL, bus: EventBus, run: str, op_timeout: float,
                   benchmark: str = "bus") -> tuple[Driver | None, dict[str, Any]]:
    """The raw engine client on the server of ``bus`` (None for memory://), and
    what to report about it: ``engine`` plus server details (bucket, prefix).
    Its keys live under ``run``; its ``close(cleanup)`` removes them."""
    if parsed.scheme == "nats":
        return await _open_raw_nats(parsed, bus, run, op_timeout, benchmark)
    if parsed.scheme == "etcd":
        return await _open_raw_etcd(parsed, run, op_timeout)
    return None, {"engine": {"name": "memory (in-process)", "version": version("infrafabric"),
                             "client": None}}


async def connect_raw(spec: dict[str, Any],
                      op_timeout: float) -> tuple[Driver, Callable[[], Awaitable[None]]]:
    """The raw side described by ``spec`` (a raw driver's :meth:`Driver.spec`),
    opened again over a new connection, e.g. in another process, and the call
    that disconnects it. Closing it this way removes nothing: the process that
    opened it with :func:`open_raw` does that."""
    if spec["engine"] == "nats":
        import nats

        nc = await nats.connect(servers=[spec["url"]], connect_timeout=op_timeout,
                                allow_reconnect=False)
        try:
            kv = await nc.jetstream().key_value(spec["bucket"])
        except BaseException:
            await nc.close()
            raise
        return (RawNatsDriver(nc, kv, spec["bucket"], spec["url"], spec["run"], op_timeout),
                nc.close)
    if spec["engine"] == "etcd":
        import aetcd

        host, port = parse_url(spec["url"]).hosts[0]
        client = aetcd.Client(host, port)
        try:
            async with asyncio.timeout(op_timeout):
                await client.connect()
        except BaseException:
            with contextlib.suppress(Exception):
                await client.close()
            raise
        return RawEtcdDriver(client, spec["url"], spec["run"], op_timeout), client.close
    raise ValueError(f"no raw client for {spec['engine']!r}")


# -- measuring ----------------------------------------------------------------


class _WatchTimer:
    """Times put → watch: a reader task stamps each event as the watch yields it."""

    def __init__(self, driver: Driver, stream: KeyStream, timeout: float) -> None:
        self.driver = driver
        self.stream = stream
        self.timeout = timeout
        self.waiters: dict[str, asyncio.Future[int]] = {}
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for key in self.stream:
            now = time.perf_counter_ns()
            fut = self.waiters.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result(now)

    async def measure(self, i: int) -> int:
        key = self.driver.key("w", i)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiters[key] = fut
        t0 = time.perf_counter_ns()
        await self.driver.put("w", i)
        waits: list[asyncio.Future[Any]] = [fut, self.task]
        done, _ = await asyncio.wait(waits, timeout=self.timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if fut in done:
            return fut.result() - t0
        self.waiters.pop(key, None)
        if self.task in done:
            exc = self.task.exception()
            raise BenchError(f"the {self.driver.side} watch ended: {exc!r}") from exc
        raise BenchError(f"{self.driver.side} watch: no event for {key!r} within {self.timeout:g} s")

    async def close(self) -> None:
        await self.stream.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


def _targets(ops: dict[str, dict[str, Any]], backend: str, server: dict[str, Any]) -> list[dict[str, Any]]:
    durable_nats, note = nats_scope(backend, server)
    out: list[dict[str, Any]] = []
    for tid, op, metric, threshold, description in TARGETS:
        value = metric_value(ops, op, metric)
        if op == "pubsub" and not ops.get(op, {}).get("cross_process", False):
            value = None
        out.append(target_row(tid, description, op, metric, threshold, value,
                              applies=durable_nats, note=note))
    return out


async def bench_bus(
    url: str,
    n: int,
    *,
    inflight: int = 64,
    warmup: int | None = None,
    pace_ms: float = 1.0,
    op_timeout: float = 10.0,
    server: dict[str, Any] | None = None,
    cleanup: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Benchmark the bus at ``url`` against the raw engine client on the same server.

    ``n`` samples per latency (after ``warmup`` discarded ones, default
    :func:`default_warmup`), ``n`` creates for throughput with ``inflight`` in
    flight; ``pace_ms`` pause between pub/sub messages; ``op_timeout`` for any
    single wait; ``server`` describes the server (e.g. ``{"sync_interval":
    "always", "managed": True}``) and is copied into the result; ``cleanup``
    removes every key the run wrote. Returns a JSON-ready dict (see the module
    docs); never raises because of a timing.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    if inflight < 1:
        raise ValueError("inflight must be at least 1")
    parsed = parse_url(url)
    backend = parsed.scheme
    warmup = default_warmup(n) if warmup is None else warmup
    total = warmup + n
    run = uuid.uuid4().hex[:10]
    server_info = dict(server or {})
    started = time.time()
    t_start = time.perf_counter()

    async with raw_client_errors(), connect(url) as bus:
        ours = OursDriver(bus, url, run, op_timeout)
        drivers: list[Driver] = [ours]
        extra: dict[str, Any] = {}
        try:
            raw, extra = await open_raw(parsed, bus, run, op_timeout)
            if raw is not None:
                drivers.append(raw)
            ops = await _measure(drivers, n, total, warmup, inflight, pace_ms, op_timeout, progress)
        finally:
            for d in reversed(drivers):
                with contextlib.suppress(Exception):
                    await d.close(cleanup)

    engine = extra.pop("engine")
    server_info.update(extra)
    return {
        "benchmark": "bus",
        "backend": backend,
        "url": str(parsed),
        "n": n,
        "warmup": warmup,
        "inflight": inflight,
        "pace_ms": pace_ms,
        "quantile_method": QUANTILE_METHOD,
        "units": {"latency": "ms", "throughput": "ops/s",
                  "ratio": "ours / raw (p50); throughput: raw ops/s / ours ops/s; >1 = ours slower"},
        "engine": engine,
        "server": server_info,
        "machine": machine_info(),
        "operations": ops,
        "targets": _targets(ops, backend, server_info),
        "started_at": started_at(started),
        "duration_s": round(time.perf_counter() - t_start, 2),
    }


async def _measure(drivers: list[Driver], n: int, total: int, warmup: int, inflight: int,
                   pace_ms: float, op_timeout: float,
                   progress: Progress | None) -> dict[str, dict[str, Any]]:
    ops: dict[str, dict[str, Any]] = {}
    revs: dict[str, dict[int, int]] = {d.side: {} for d in drivers}

    async def create_win(d: Driver, i: int) -> int:
        t0 = time.perf_counter_ns()
        rev = await d.create("c", i)
        t1 = time.perf_counter_ns()
        if rev is None:
            raise BenchError(f"{d.side}: create of the fresh key {d.key('c', i)!r} lost")
        revs[d.side][i] = rev
        return t1 - t0

    async def create_lose(d: Driver, i: int) -> int:
        t0 = time.perf_counter_ns()
        rev = await d.create("c", i)
        t1 = time.perf_counter_ns()
        if rev is not None:
            raise BenchError(f"{d.side}: create of the existing key {d.key('c', i)!r} won")
        return t1 - t0

    async def update(d: Driver, i: int) -> int:
        t0 = time.perf_counter_ns()
        rev = await d.update("c", i, revs[d.side][i])
        t1 = time.perf_counter_ns()
        if rev is None:
            raise BenchError(f"{d.side}: update of {d.key('c', i)!r} at its revision lost")
        return t1 - t0

    for op, fn in (("create_win", create_win), ("create_lose", create_lose), ("update", update)):
        gc.collect()
        samples = await interleaved(op, drivers, total, warmup, fn, progress)
        ops[op] = _latency_entry(op, samples, drivers)

    # put -> watch
    gc.collect()
    timers: dict[str, _WatchTimer] = {}
    try:
        for d in drivers:
            timers[d.side] = _WatchTimer(d, await d.watch("w"), op_timeout)

        async def put_watch(d: Driver, i: int) -> int:
            return await timers[d.side].measure(i)

        samples = await interleaved("put_watch", drivers, total, warmup, put_watch, progress)
    finally:
        for t in timers.values():
            await t.close()
    ops["put_watch"] = _latency_entry("put_watch", samples, drivers)

    # publish -> subscribe
    gc.collect()
    receivers: dict[str, Receiver] = {}
    try:
        for d in drivers:
            receivers[d.side] = await _receiver(d, op_timeout)
        for r in receivers.values():
            await r.sync()
        pace_s = pace_ms / 1000

        async def pubsub(d: Driver, i: int) -> int | None:
            return await receivers[d.side].measure(i, pace_s)

        samples = await interleaved("pubsub", drivers, total, warmup, pubsub, progress)
    finally:
        for r in receivers.values():
            await r.close()
    entry = _latency_entry("pubsub", samples, drivers)
    entry["cross_process"] = all(d.subscriber() is not None for d in drivers)
    entry["lost"] = {side: r.lost for side, r in receivers.items()}
    ops["pubsub"] = entry

    # throughput: n creates per side in segments run ABBA ABBA ..., so load
    # that changes during the run (a shared machine) hits both sides alike
    gc.collect()

    def creator(d: Driver) -> Callable[[int], Awaitable[None]]:
        async def create(i: int) -> None:
            if await d.create("t", i) is None:
                raise BenchError(f"{d.side} throughput create of a fresh key lost")
        return create

    per_side = await segmented_throughput(
        "throughput", [(d.side, creator(d)) for d in drivers], n, inflight, progress)
    tp: dict[str, Any] = {"label": OPERATIONS["throughput"][0], "what": OPERATIONS["throughput"][1]}
    tp.update(per_side)
    tp.setdefault("raw", None)
    tp["ratio"] = (ratio(tp["raw"]["ops_per_s"], tp["ours"]["ops_per_s"])
                   if tp["raw"] is not None else None)
    tp["inflight"] = inflight
    tp["rounds"] = throughput_rounds(n)
    tp["cpu_ratio"] = (ratio(tp["ours"]["client_cpu_us_per_op"], tp["raw"]["client_cpu_us_per_op"])
                       if tp["raw"] is not None else None)
    tp["calls"] = {d.side: d.calls["throughput"] for d in drivers}
    ops["throughput"] = tp
    return ops


def _latency_entry(op: str, samples: dict[str, list[int]], drivers: list[Driver]) -> dict[str, Any]:
    label, what = OPERATIONS[op]
    return latency_entry(label, what, samples, {d.side: d.calls[op] for d in drivers})


async def _receiver(d: Driver, op_timeout: float) -> Receiver:
    """The publish→subscribe receiver of ``d``: a subscriber process, or for
    memory:// a subscription in this process."""

    async def send(seq: int) -> None:
        await d.publish(encode(seq, time.monotonic_ns()))

    spec = d.subscriber()
    if spec is not None:
        return await ProcessReceiver.start(d.side, send, spec, op_timeout)
    sub = await d.in_process_subscription()

    def parse_message(msg: Message) -> tuple[int, int]:
        return parse(msg.data)

    return await InProcessReceiver.start(d.side, send, sub, parse_message, sub.close, op_timeout)
