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
import importlib.metadata
import os
import platform
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Any

from infrafabric.bench._wire import encode, parse
from infrafabric.bench.stats import QUANTILE_METHOD, ratio, summarize
from infrafabric.bus import EventBus, connect, parse_url
from infrafabric.bus.base import EventKind, Subscription
from infrafabric.bus.keys import to_tokens
from infrafabric.bus.url import BusURL
from infrafabric.errors import InfraFabricError

__all__ = ["OPERATIONS", "TARGETS", "BenchError", "Progress", "bench_bus", "default_warmup"]

#: progress(phase, done, total), called between samples (never inside a timed window)
Progress = Callable[[str, int, int], None]

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


class BenchError(InfraFabricError):
    """The benchmark could not run (not a timing verdict: timings never fail it)."""


def default_warmup(n: int) -> int:
    """Samples discarded before measuring: 10 % of n, at least 10, at most 200."""
    return min(200, max(10, n // 10))


def throughput_rounds(n: int) -> int:
    """Segments per side of the throughput run: n/100, between 2 and 8."""
    return max(2, min(8, n // 100))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


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
    async def create(self, kind: str, i: int) -> int | None: ...

    @abstractmethod
    async def update(self, kind: str, i: int, revision: int) -> int | None: ...

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

    async def create(self, kind: str, i: int) -> int | None:
        return await self.bus.create(self.key(kind, i), PAYLOAD)

    async def update(self, kind: str, i: int, revision: int) -> int | None:
        return await self.bus.update(self.key(kind, i), PAYLOAD2, revision)

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

    async def create(self, kind: str, i: int) -> int | None:
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            async with asyncio.timeout(self.timeout):
                return int(await self.kv.create(self.key(kind, i), PAYLOAD))
        except KeyWrongLastSequenceError:
            return None

    async def update(self, kind: str, i: int, revision: int) -> int | None:
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            async with asyncio.timeout(self.timeout):
                return int(await self.kv.update(self.key(kind, i), PAYLOAD2, last=revision))
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

    async def create(self, kind: str, i: int) -> int | None:
        key = self.key(kind, i).encode()
        return await self._txn(self.client.transactions.version(key) == 0, key, PAYLOAD)

    async def update(self, kind: str, i: int, revision: int) -> int | None:
        key = self.key(kind, i).encode()
        return await self._txn(self.client.transactions.mod(key) == revision, key, PAYLOAD2)

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


async def _open_raw_nats(parsed: BusURL, ours: OursDriver, run: str,
                         op_timeout: float) -> tuple[RawNatsDriver, dict[str, Any]]:
    import nats
    from nats.js import api

    servers = [f"nats://{h}:{p}" for h, p in parsed.hosts]
    nc = await nats.connect(servers=servers, connect_timeout=op_timeout)
    try:
        js = nc.jetstream()
        probe = f"bench/{run}/probe"
        await ours.bus.create(probe, PAYLOAD)
        tokens = to_tokens(f"{ours.bus.namespace}/{probe}")
        our_bucket = await _find_nats_bucket(ours.bus, js, tokens)
        raw_bucket = f"ifbench_{run}"
        info: dict[str, Any] = {"our_bucket": our_bucket, "raw_bucket": raw_bucket}
        if our_bucket is not None:
            si = await js.stream_info(f"KV_{our_bucket}")
            cfg = dataclasses.replace(
                si.config, name=f"KV_{raw_bucket}", subjects=[f"$KV.{raw_bucket}.>"],
                metadata=None, republish=None, mirror=None, sources=None,
                description="ifctl bench bus: raw client bucket (deleted after the run)",
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
        v = nc.connected_server_version
        info["engine"] = {"name": "nats-server", "version": f"{v.major}.{v.minor}.{v.patch}",
                          "client": f"nats-py {_version('nats-py')}"}
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
                       "client": f"aetcd {_version('aetcd')}"},
            "raw_prefix": f"{RawEtcdDriver.ROOT}/{run}/"}
    return RawEtcdDriver(client, f"etcd://{host}:{port}", run, op_timeout), info


# -- measuring ----------------------------------------------------------------


Sample = Callable[[Driver, int], Awaitable[int | None]]


async def _interleaved(phase: str, drivers: list[Driver], total: int, warmup: int,
                       sample: Sample, progress: Progress | None) -> dict[str, list[int]]:
    """Run ``sample`` for i in range(total) on every driver, alternating which
    side goes first; keep the samples after the first ``warmup``. A sample of
    None is a lost message (not recorded)."""
    out: dict[str, list[int]] = {d.side: [] for d in drivers}
    step = max(1, total // 100)
    for i in range(total):
        order = drivers if i % 2 == 0 else drivers[::-1]
        for d in order:
            ns = await sample(d, i)
            if i >= warmup and ns is not None:
                out[d.side].append(ns)
        if progress is not None and (i % step == 0 or i == total - 1):
            progress(phase, i + 1, total)
    return out


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


class _Receiver(ABC):
    """The subscriber end of publish → subscribe: yields (seq, latency_ns)."""

    def __init__(self, driver: Driver, timeout: float) -> None:
        self.driver = driver
        self.timeout = timeout
        self.latency: dict[int, int] = {}
        self.waiters: dict[int, asyncio.Future[int]] = {}
        self.lost = 0

    def _arrived(self, seq: int, sent: int, recv: int) -> None:
        self.latency[seq] = recv - sent
        fut = self.waiters.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_result(recv - sent)

    async def sync(self) -> None:
        """Ping (seq -1) until one arrives: the subscription is live end to end."""
        deadline = time.monotonic() + self.timeout
        while -1 not in self.latency:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.driver.side} subscriber never received a ping "
                                 f"within {self.timeout:g} s")
            await self.driver.publish(encode(-1, time.monotonic_ns()))
            with contextlib.suppress(TimeoutError):
                await self._wait(-1, 0.05)

    async def _wait(self, seq: int, wait_s: float) -> int:
        if seq in self.latency:
            return self.latency[seq]
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiters[seq] = fut
        try:
            async with asyncio.timeout(wait_s):
                return await fut
        finally:
            self.waiters.pop(seq, None)

    async def measure(self, i: int, pace_s: float) -> int | None:
        await self.driver.publish(encode(i, time.monotonic_ns()))
        try:
            latency = await self._wait(i, self.timeout)
        except TimeoutError:
            self.lost += 1
            return None
        if pace_s > 0:
            await asyncio.sleep(pace_s)
        return latency

    @abstractmethod
    async def close(self) -> None: ...


class _ProcessReceiver(_Receiver):
    """A subscriber subprocess (:mod:`infrafabric.bench._subscriber`)."""

    proc: asyncio.subprocess.Process
    reader: asyncio.Task[None]
    errors: IO[bytes]

    @classmethod
    async def start(cls, driver: Driver, mode: str, url: str, subject: str,
                    op_timeout: float) -> _ProcessReceiver:
        self = cls(driver, op_timeout)
        # stderr goes to a file: never read during the run, so a pipe could fill up
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "infrafabric.bench._subscriber", mode, url, subject,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self.errors,
        )
        try:
            assert self.proc.stdout is not None
            wait = max(30.0, op_timeout)
            try:
                async with asyncio.timeout(wait):
                    line = await self.proc.stdout.readline()
            except TimeoutError:
                line = f"not ready within {wait:g} s".encode()
            if line.strip() != b"ready":
                await self._stop()
                self.errors.seek(0)
                err = self.errors.read().decode(errors="replace").strip()
                tail = "\n".join(err.splitlines()[-5:])
                raise BenchError(f"the {driver.side} subscriber process did not start: "
                                 f"{line.decode(errors='replace').strip() or 'no output'}"
                                 + (f"\n{tail}" if tail else ""))
            self.reader = asyncio.create_task(self._read())
        except BaseException:
            await self.close()
            raise
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            try:
                seq, sent, recv = (int(x) for x in line.split())
            except ValueError:
                continue
            self._arrived(seq, sent, recv)

    async def _stop(self) -> None:
        """Close its stdin (the signal to exit), wait 5 s, then kill it."""
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self.proc.wait()
        except TimeoutError:
            pass
        finally:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()

    async def close(self) -> None:
        try:
            await self._stop()
        finally:
            if hasattr(self, "reader"):
                self.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.reader
            self.errors.close()


class _InProcessReceiver(_Receiver):
    """memory:// has no second process: the subscription runs in this one."""

    sub: Subscription
    reader: asyncio.Task[None]

    @classmethod
    async def start(cls, driver: Driver, op_timeout: float) -> _InProcessReceiver:
        self = cls(driver, op_timeout)
        self.sub = await driver.in_process_subscription()
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for msg in self.sub:
            recv = time.monotonic_ns()
            seq, sent = parse(msg.data)
            self._arrived(seq, sent, recv)

    async def close(self) -> None:
        await self.sub.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader


async def _throughput(driver: Driver, start: int, count: int,
                      inflight: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) to create keys t/start ..
    t/start+count-1 with ``inflight`` in flight."""
    indices = iter(range(start, start + count))

    async def worker() -> None:
        for i in indices:
            if await driver.create("t", i) is None:
                raise BenchError(f"{driver.side} throughput create of a fresh key lost")

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(inflight, count)))))
    return time.perf_counter() - t0, time.process_time() - c0


def _latency_entry(op: str, samples: dict[str, list[int]], drivers: list[Driver]) -> dict[str, Any]:
    label, what = OPERATIONS[op]
    ours = summarize(samples["ours"])
    raw = summarize(samples["raw"]) if "raw" in samples else None
    return {
        "label": label,
        "what": what,
        "ours": ours,
        "raw": raw,
        "ratio": ratio(ours["p50"], raw["p50"]) if raw else None,
        "ratio_p99": ratio(ours["p99"], raw["p99"]) if raw else None,
        "calls": {d.side: d.calls[op] for d in drivers},
    }


def _targets(ops: dict[str, dict[str, Any]], backend: str, server: dict[str, Any]) -> list[dict[str, Any]]:
    durable_nats = backend == "nats" and server.get("sync_interval") == "always"
    out: list[dict[str, Any]] = []
    for tid, op, metric, threshold, description in TARGETS:
        entry = ops.get(op, {})
        if metric == "ratio":
            value = entry.get("ratio")
        else:
            side, _, stat = metric.partition(".")
            value = (entry.get(side) or {}).get(stat)
        if op == "pubsub" and not entry.get("cross_process", False):
            value = None
        passed = None if value is None else bool(value <= threshold)
        if backend != "nats":
            note = "the target is defined for a durable local NATS; shown for comparison"
        elif not durable_nats:
            note = ("the target is defined for a durable NATS (sync_interval: always); "
                    f"this server's sync_interval is {server.get('sync_interval', 'unknown')}")
        else:
            note = ""
        if value is None:
            note = note or "not measurable here"
        out.append({"id": tid, "target": description, "operation": op, "metric": metric,
                    "threshold": threshold, "value": value, "pass": passed,
                    "applies": durable_nats, "note": note})
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

    async with connect(url) as bus:
        ours = OursDriver(bus, url, run, op_timeout)
        drivers: list[Driver] = [ours]
        raw: Driver | None = None
        extra: dict[str, Any] = {}
        try:
            if backend == "nats":
                raw, extra = await _open_raw_nats(parsed, ours, run, op_timeout)
            elif backend == "etcd":
                raw, extra = await _open_raw_etcd(parsed, run, op_timeout)
            else:
                extra = {"engine": {"name": "memory (in-process)",
                                    "version": _version("infrafabric"), "client": None}}
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
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "infrafabric": _version("infrafabric")},
        "operations": ops,
        "targets": _targets(ops, backend, server_info),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
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
        samples = await _interleaved(op, drivers, total, warmup, fn, progress)
        ops[op] = _latency_entry(op, samples, drivers)

    # put -> watch
    gc.collect()
    timers: dict[str, _WatchTimer] = {}
    try:
        for d in drivers:
            timers[d.side] = _WatchTimer(d, await d.watch("w"), op_timeout)

        async def put_watch(d: Driver, i: int) -> int:
            return await timers[d.side].measure(i)

        samples = await _interleaved("put_watch", drivers, total, warmup, put_watch, progress)
    finally:
        for t in timers.values():
            await t.close()
    ops["put_watch"] = _latency_entry("put_watch", samples, drivers)

    # publish -> subscribe
    gc.collect()
    receivers: dict[str, _Receiver] = {}
    try:
        for d in drivers:
            spec = d.subscriber()
            if spec is None:
                receivers[d.side] = await _InProcessReceiver.start(d, op_timeout)
            else:
                receivers[d.side] = await _ProcessReceiver.start(d, *spec, op_timeout=op_timeout)
        for r in receivers.values():
            await r.sync()
        pace_s = pace_ms / 1000

        async def pubsub(d: Driver, i: int) -> int | None:
            return await receivers[d.side].measure(i, pace_s)

        samples = await _interleaved("pubsub", drivers, total, warmup, pubsub, progress)
    finally:
        for r in receivers.values():
            await r.close()
    entry = _latency_entry("pubsub", samples, drivers)
    entry["cross_process"] = all(d.subscriber() is not None for d in drivers)
    entry["lost"] = {side: r.lost for side, r in receivers.items()}
    ops["pubsub"] = entry

    # throughput: n creates per side in `rounds` segments run ABBA ABBA ..., so
    # load that changes during the run (a shared machine) hits both sides alike
    gc.collect()
    rounds = throughput_rounds(n)
    bounds = [n * k // rounds for k in range(rounds + 1)]
    seconds = {d.side: 0.0 for d in drivers}
    cpu = {d.side: 0.0 for d in drivers}
    plan = [(d, k) for k in range(rounds)
            for d in (drivers if k % 2 == 0 else drivers[::-1])]
    for step, (d, k) in enumerate(plan):
        if progress is not None:
            progress("throughput", step, len(plan))
        wall, used = await _throughput(d, bounds[k], bounds[k + 1] - bounds[k], inflight)
        seconds[d.side] += wall
        cpu[d.side] += used
    if progress is not None:
        progress("throughput", len(plan), len(plan))
    tp: dict[str, Any] = {"label": OPERATIONS["throughput"][0], "what": OPERATIONS["throughput"][1]}
    for d in drivers:
        s = seconds[d.side]
        tp[d.side] = {"ops": n, "seconds": round(s, 4), "ops_per_s": round(n / s, 1) if s else None,
                      "client_cpu_us_per_op": round(cpu[d.side] / n * 1e6, 1)}
    tp.setdefault("raw", None)
    tp["ratio"] = (ratio(tp["raw"]["ops_per_s"], tp["ours"]["ops_per_s"])
                   if tp["raw"] is not None else None)
    tp["inflight"] = inflight
    tp["rounds"] = rounds
    tp["cpu_ratio"] = (ratio(tp["ours"]["client_cpu_us_per_op"], tp["raw"]["client_cpu_us_per_op"])
                       if tp["raw"] is not None else None)
    tp["calls"] = {d.side: d.calls["throughput"] for d in drivers}
    ops["throughput"] = tp
    return ops
