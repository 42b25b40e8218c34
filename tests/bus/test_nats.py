"""NATS-specific behaviour of :class:`~infrafabric.bus.nats.NatsBus` against real
``nats-server`` processes: crash recovery, fail-fast during an outage, key
encoding, and the places where NATS KV semantics differ from the contract."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.js.errors
import pytest

from infrafabric.bus import EventBus, EventKind, WatchEvent, connect
from infrafabric.bus.keys import from_tokens, to_tokens
from infrafabric.bus.nats import NatsBus, _scan_key
from infrafabric.bus.servers import NatsServer, free_port
from infrafabric.errors import (
    BusError,
    BusTimeoutError,
    BusUnavailableError,
    CompactedError,
    ConfigurationError,
)
from support import assert_scan_streams

GUARD = 10.0  # fails a test that hangs; never a latency assertion
OUTAGE_ERRORS = (BusUnavailableError, BusTimeoutError)


@pytest.fixture
def own_server() -> Iterator[NatsServer]:
    """A server of this test's own, free to be killed and restarted."""
    with NatsServer() as server:
        yield server


@pytest.fixture
async def nbus(nats_server: NatsServer) -> AsyncIterator[EventBus]:
    namespace = "t" + uuid.uuid4().hex[:12]
    async with connect(f"{nats_server.url}?namespace={namespace}") as bus:
        yield bus


async def until_healthy(bus: EventBus) -> None:
    """Wait (under the caller's guard) until the bus answers again by itself.
    The server is another process: probing is the only way to see it is back."""
    while not await bus.health_check():  # noqa: ASYNC110
        await asyncio.sleep(0.05)


class Milestone:
    """Set ``reached`` once a count gets to ``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.reached = asyncio.Event()

    def check(self, count: int) -> None:
        if count >= self.target:
            self.reached.set()


async def collect(watch: object, out: list[WatchEvent], until: int) -> None:
    """Append events to ``out`` until one with revision >= ``until`` arrived."""
    async for event in watch:  # type: ignore[attr-defined]
        out.append(event)
        if event.revision >= until:
            return


# -- crash and restart ---------------------------------------------------------------


async def test_kill9_restart_keeps_acked_writes_and_watch_resumes(own_server: NatsServer) -> None:
    """Two crashes (SIGKILL) and restarts on the same port and data directory
    while a writer writes and a watch is open."""
    # A long bus timeout: anything that waited for its deadline would trip GUARD.
    url = f"{own_server.url}?timeout=60"
    acked: dict[str, tuple[bytes, int]] = {}
    milestone = Milestone(0)
    stop = asyncio.Event()
    outcomes = {"unavailable": 0, "timeout": 0}

    async with connect(url) as bus:
        start = await bus.revision() + 1
        watch = bus.watch("w/")
        await watch.start()

        async def writer() -> None:
            i = attempt = 0
            while not stop.is_set():
                attempt += 1
                value = f"{i}:{attempt}".encode()  # unique per attempt
                try:
                    rev = await bus.put(f"w/{i:05d}", value)
                except BusUnavailableError:
                    outcomes["unavailable"] += 1
                    await asyncio.sleep(0.02)  # the writer backs off while the bus is down
                    continue
                except BusTimeoutError:  # lost in the crash: applied or not, write again
                    outcomes["timeout"] += 1
                    continue
                acked[f"w/{i:05d}"] = (value, rev)
                i += 1
                milestone.check(i)
                await asyncio.sleep(0)

        async with asyncio.timeout(GUARD * 3):
            task = asyncio.create_task(writer())
            for _crash in range(2):
                milestone = Milestone(len(acked) + 50)
                await milestone.reached.wait()
                own_server.kill()
                await asyncio.to_thread(own_server.start)
                await until_healthy(bus)
            # the writer carries on by itself
            milestone = Milestone(len(acked) + 50)
            await milestone.reached.wait()
            stop.set()
            await task
            assert outcomes["unavailable"] > 0  # it did see the outage

            last = await bus.revision()
            events: list[WatchEvent] = []
            await collect(watch, events, last)
            await watch.close()

            # Every acknowledged write survived the crash.
            for key, (value, rev) in acked.items():
                entry = await bus.get(key)
                assert entry is not None and (entry.value, entry.revision) == (value, rev)

            # The watch saw each event exactly once, in order: exactly what a
            # fresh watch replaying the bucket history sees.
            revisions = [e.revision for e in events]
            assert revisions == sorted(set(revisions))
            replay: list[WatchEvent] = []
            async with bus.watch("w/", start_revision=start) as again:
                await collect(again, replay, last)
            assert events == replay
            seen = {(e.key, e.value, e.revision) for e in events}
            assert {(k, v, r) for k, (v, r) in acked.items()} <= seen


async def test_outage_fails_fast_and_health_follows(own_server: NatsServer) -> None:
    async with connect(f"{own_server.url}?timeout=60") as bus:
        rev = await bus.put("o/k", "before")
        assert await bus.health_check()
        own_server.kill()
        async with asyncio.timeout(GUARD):  # far below the 60 s bus timeout
            for call in (
                lambda: bus.put("o/k", "during"),
                lambda: bus.get("o/k"),
                lambda: bus.update("o/k", "during", rev),
                lambda: bus.list("o/"),
                lambda: bus.publish("o/subject", "during"),
            ):
                with pytest.raises(OUTAGE_ERRORS) as info:
                    await call()
                assert info.value.exit_code == 3
            health = await bus.health_check()
            assert not health.ok and health.detail
        await asyncio.to_thread(own_server.start)
        async with asyncio.timeout(GUARD):
            await until_healthy(bus)
            entry = await bus.get("o/k")
            assert entry is not None and entry.value == b"before"
            assert await bus.update("o/k", "after", rev) is not None


async def test_watch_resume_retries_until_jetstream_answers(
    own_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after a reconnect JetStream may not answer yet: re-creating the
    watch's consumer is retried until it does, and no event is lost."""
    async with connect(own_server.url) as bus, bus.watch("r/") as watch:
        r1 = await bus.put("r/1", "1")
        js = bus._js  # type: ignore[attr-defined]
        subscribe = js.subscribe
        failures = 3

        async def not_ready_yet(*args: object, **kwargs: object) -> object:
            nonlocal failures
            if failures:
                failures -= 1
                raise nats.js.errors.ServiceUnavailableError()
            return await subscribe(*args, **kwargs)

        monkeypatch.setattr(js, "subscribe", not_ready_yet)
        own_server.kill()
        await asyncio.to_thread(own_server.start)
        async with asyncio.timeout(GUARD):
            await until_healthy(bus)
            r2 = await bus.put("r/2", "2")
            events = [await watch.get(), await watch.get()]
        assert [(e.key, e.revision) for e in events] == [("r/1", r1), ("r/2", r2)]
        assert failures == 0


async def test_call_in_flight_when_connection_drops_ends_promptly(own_server: NatsServer) -> None:
    async with connect(f"{own_server.url}?timeout=60") as bus:
        await bus.put("p/k", "v")
        own_server.pause()  # the request goes out and is never answered
        try:
            async with asyncio.timeout(GUARD):
                pending = asyncio.create_task(bus.put("p/k", "lost?"))
                await asyncio.sleep(0.1)  # let the put get on its way
                # SIGKILL while stopped: it never answers, the connection drops
                assert own_server.pid is not None
                os.kill(own_server.pid, signal.SIGKILL)
                with pytest.raises(BusTimeoutError) as info:
                    await pending
                assert "outcome is unknown" in str(info.value)
        finally:
            own_server.kill()  # reaps it
        await asyncio.to_thread(own_server.start)
        async with asyncio.timeout(GUARD):
            await until_healthy(bus)


async def test_subscription_survives_restart(own_server: NatsServer) -> None:
    async with connect(own_server.url) as pub, connect(own_server.url) as sub_bus:
        async with sub_bus.subscribe("s/x") as sub:
            own_server.kill()
            await asyncio.to_thread(own_server.start)
            async with asyncio.timeout(GUARD):
                await until_healthy(pub)
                await until_healthy(sub_bus)
                # at-most-once: publish until one gets through the re-subscription
                while True:
                    await pub.publish("s/x", "hello")
                    with contextlib.suppress(TimeoutError):
                        msg = await sub.get(0.2)
                        break
            assert msg.subject == "s/x" and msg.data == b"hello"


# -- connection ---------------------------------------------------------------------


async def test_connect_to_nothing_is_unavailable() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    before = asyncio.all_tasks()
    async with asyncio.timeout(GUARD):
        with pytest.raises(BusUnavailableError) as info:
            await connect(url)
    assert info.value.exit_code == 3
    assert url in str(info.value)
    assert "ifctl coordinator start" in str(info.value) and "IF_BUS_URL" in str(info.value)
    assert isinstance(info.value.__cause__, nats.errors.Error)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() <= before  # nothing of nats-py left running


async def test_close_during_outage_is_clean(own_server: NatsServer) -> None:
    before = asyncio.all_tasks()
    bus = await connect(own_server.url)
    watch = bus.watch("c/")
    await watch.start()
    own_server.kill()
    async with asyncio.timeout(GUARD):
        with pytest.raises(OUTAGE_ERRORS):  # now the client knows it is down
            await bus.get("c/k")
        await bus.close()
        assert [e async for e in watch] == []
    await asyncio.sleep(0)
    assert asyncio.all_tasks() <= before


async def test_close_leaves_no_tasks(nats_server: NatsServer) -> None:
    before = asyncio.all_tasks()
    async with connect(nats_server.url) as bus:
        watch = bus.watch("x/")
        sub = bus.subscribe("x/y")
        await watch.start()
        await sub.start()
        await bus.put("x/1", "v")
        assert (await watch.get(GUARD)).key == "x/1"
        assert await bus.list("x/")
    await asyncio.sleep(0)
    assert asyncio.all_tasks() <= before


# -- key encoding and NATS KV specifics -------------------------------------------------


async def test_key_encoding_round_trips(nbus: EventBus, nats_server: NatsServer) -> None:
    keys = ["tasks/P0.1.1", "tasks/P0.2", "tasks/P0", "tasks/P01", "tasks/P1.1",
            "caps/domain:skill", "users/ann@example.com", "odd/a+b=c~d_e-f", "odd/.hidden.",
            "long/" + ":@." * 339]  # 1,022 characters, 3,000 once encoded
    for key in keys:
        await nbus.put(key, key)
    for key in keys:
        entry = await nbus.get(key)
        assert entry is not None and entry.key == key and entry.value == key.encode()
    assert [e.key for e in await nbus.list("tasks/P0.")] == ["tasks/P0.1.1", "tasks/P0.2"]
    assert [e.key for e in await nbus.list("caps/")] == ["caps/domain:skill"]
    assert {e.key for e in await nbus.list()} == set(keys)
    # "/" and "." stay distinct all the way down to the stored KV key
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().key_value("infrafabric")
        stored = await kv.get(to_tokens(f"{nbus.namespace}/tasks/P0.1.1"))
        assert stored.value == b"tasks/P0.1.1"
    finally:
        await nc.close()


async def test_watch_decodes_keys_and_deletes(nbus: EventBus) -> None:
    async with nbus.watch("caps/") as watch:
        r1 = await nbus.put("caps/a:b@c.d", "1")
        assert await nbus.delete("caps/a:b@c.d") is True
        async with asyncio.timeout(GUARD):
            first, second = await watch.get(), await watch.get()
    assert (first.kind, first.key, first.value, first.revision) == (
        EventKind.PUT, "caps/a:b@c.d", b"1", r1)
    assert (second.kind, second.key, second.value) == (EventKind.DELETE, "caps/a:b@c.d", None)


async def test_delete_of_absent_key_writes_nothing(nbus: EventBus) -> None:
    rev = await nbus.put("d/k", "v")
    assert await nbus.delete("d/k") is True
    deleted_at = await nbus.revision()
    assert await nbus.delete("d/k") is False
    assert await nbus.delete("d/never") is False
    # the delete marker's revision is not a revision of the key
    assert await nbus.delete("d/k", revision=deleted_at) is False
    assert await nbus.delete("d/k", revision=rev) is False
    assert await nbus.revision() == deleted_at


async def test_subjects_do_not_collide(nbus: EventBus) -> None:
    async with nbus.subscribe("a/b") as slash, nbus.subscribe("a.b") as dot:
        await nbus.publish("a.b", "dot")
        await nbus.publish("a/b", "slash")
        async with asyncio.timeout(GUARD):
            assert (await slash.get()).data == b"slash"
            assert (await dot.get()).data == b"dot"


async def test_bucket_options_and_compacted_watch(nats_server: NatsServer) -> None:
    bucket = "b" + uuid.uuid4().hex[:12]
    async with connect(f"{nats_server.url}?bucket={bucket}&history=1") as bus:
        first = await bus.put("k", "1")
        await bus.put("k", "2")  # history=1 drops the first revision
        health = await bus.health_check()
        assert health.ok and bucket in health.detail
        with pytest.raises(CompactedError):
            await bus.watch("", start_revision=first).start()
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(f"KV_{bucket}")
        assert info.config.max_msgs_per_subject == 1
        assert info.config.storage == nats.js.api.StorageType.FILE
        await js.delete_key_value(bucket)
    finally:
        await nc.close()


async def test_bad_options_fail_before_io() -> None:
    port = free_port()  # nothing listens: a ConfigurationError proves no I/O happened
    for option in ("bucket=a.b", "history=65", "replicas=0", "connect_timeout=-1"):
        with pytest.raises(ConfigurationError):
            await connect(f"nats://127.0.0.1:{port}?{option}")


# -- scan -------------------------------------------------------------------------------


def stopped(pid: int) -> bool:
    """True once every thread of the SIGSTOPped process ``pid`` has stopped (the
    signal takes effect asynchronously, later still on a busy machine)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(s in ("T", "t") for s in states)


async def publish_in_order(url: str, namespace: str, items: list[tuple[str, bytes]]) -> None:
    """Write many keys fast, stored in this order: publishes on one connection
    reach the stream in order; every 500th waits for its ack, which keeps the
    server's queue short."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for i, (key, value) in enumerate(items, 1):
            subject = f"$KV.infrafabric.{to_tokens(f'{namespace}/{key}')}"
            if i % 500 == 0 or i == len(items):
                await js.publish(subject, value)
            else:
                await nc.publish(subject, value)
    finally:
        await nc.close()


async def consumer_names(bus: EventBus) -> set[str]:
    infos = await bus._js.consumers_info(bus._stream)  # type: ignore[attr-defined]
    return {info.name for info in infos}


def test_scan_decodes_keys_as_from_tokens() -> None:
    keys = ["log/00000001", "tasks/P0.1.1", "caps/domain:skill", "users/ann@example.com",
            "odd/a+b=c~d_e-f", "odd/.hidden.", "long/" + ":@." * 339, "a/b_c-d/E"]
    for key in keys:
        assert _scan_key(to_tokens(key)) == from_tokens(to_tokens(key)) == key


async def test_scan_20k_entries_once_each_in_write_order(nbus: EventBus, nats_server: NatsServer) -> None:
    keys = (
        [f"s/{i:06d}" for i in range(12_000)]
        + [f"s/t.{i}" for i in range(4_000)]  # escaped: '.' is a token separator
        + [f"s/u:{i}@x/y" for i in range(4_000)]
    )
    random.shuffle(keys)
    await publish_in_order(nats_server.url, nbus.namespace, [(k, k.encode()) for k in keys])
    rewritten = {k: await nbus.put(k, f"again {k}") for k in keys[:100]}
    deleted = keys[100:150]
    for k in deleted:
        assert await nbus.delete(k)
    for k in ("r/1", "s0/x", "sx"):
        await nbus.put(k, "outside")
    expected = keys[150:] + list(rewritten)

    nc = nbus._nc  # type: ignore[attr-defined]
    received_before = nc.stats["in_msgs"]
    seen = []
    async with asyncio.timeout(GUARD * 6):
        async for entry in nbus.scan("s/", batch=500):
            seen.append(entry)
            # never more than a page (plus the delete markers and API replies) ahead
            assert nc.stats["in_msgs"] - received_before <= len(seen) + len(deleted) + 500 + 10
    assert [e.key for e in seen] == expected
    revisions = [e.revision for e in seen]
    assert revisions == sorted(set(revisions))
    assert [e.revision for e in seen[-100:]] == list(rewritten.values())
    assert all(e.value == (f"again {e.key}" if e.key in rewritten else e.key).encode() for e in seen)
    assert sorted(seen, key=lambda e: e.key) == await nbus.list("s/")


async def test_scan_stopped_early_removes_its_consumer(own_server: NatsServer) -> None:
    async with connect(own_server.url) as bus:
        await publish_in_order(own_server.url, bus.namespace, [(f"e/{i:05d}", b"x") for i in range(2_000)])
        async with bus.watch("w/"):  # a consumer that must stay
            tasks_before = asyncio.all_tasks()
            consumers_before = await consumer_names(bus)
            count_before = (await bus._js.stream_info(bus._stream)).state.consumer_count  # type: ignore[attr-defined]
            async with asyncio.timeout(GUARD):
                seen = []
                async for entry in bus.scan("e/", batch=100):
                    seen.append(entry.key)
                    if len(seen) == 10:
                        assert len(await consumer_names(bus)) == len(consumers_before) + 1
                        break
                assert seen == [f"e/{i:05d}" for i in range(10)]
                with contextlib.suppress(RuntimeError):
                    async for _entry in bus.scan("e/", batch=100):
                        raise RuntimeError("the caller fails mid-scan")
                # the abandoned scans are closed by the loop, as soon as it gets to them
                while await consumer_names(bus) != consumers_before:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            info = await bus._js.stream_info(bus._stream)  # type: ignore[attr-defined]
            assert info.state.consumer_count == count_before
            assert asyncio.all_tasks() <= tasks_before
            assert (await bus.get("e/00001")) is not None


async def test_a_scan_page_is_bounded_by_the_deadline(own_server: NatsServer) -> None:
    async with connect(f"{own_server.url}?timeout=1") as bus:
        await publish_in_order(own_server.url, bus.namespace, [(f"p/{i:03d}", b"x") for i in range(100)])
        scan = bus.scan("p/", batch=10)
        got = [await anext(scan) for _ in range(10)]  # the first page
        assert got[-1].key == "p/009"
        own_server.pause()
        try:
            async with asyncio.timeout(GUARD):
                assert own_server.pid is not None
                while not stopped(own_server.pid):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                with pytest.raises(OUTAGE_ERRORS):
                    await anext(scan)
        finally:
            own_server.resume()


async def test_a_scan_whose_consumer_vanished_fails_clearly(nbus: EventBus) -> None:
    for i in range(30):
        await nbus.put(f"v/{i:03d}", "x")
    scan = nbus.scan("v/", batch=10)
    assert [(await anext(scan)).key for _ in range(10)][-1] == "v/009"
    js, stream = nbus._js, nbus._stream  # type: ignore[attr-defined]
    for info in await js.consumers_info(stream):
        if info.name.startswith("scan_"):
            await js.delete_consumer(stream, info.name)  # as the server does after 30 s idle
    async with asyncio.timeout(GUARD):
        with pytest.raises(BusError, match="consumer is gone"):
            await anext(scan)


async def test_scan_streams_100k_entries() -> None:
    """A 100k-entry scan pages through all of it, in key order (its speed is
    `ifctl bench`'s business, not a test's)."""
    value = b"v" * 290
    with NatsServer(sync_always=False) as server:  # fsync per write would make filling slow
        async with connect(server.url) as bus:
            await publish_in_order(server.url, bus.namespace, [(f"w/{i:08d}", value) for i in range(100_000)])
            await assert_scan_streams(bus, "w/", 100_000)


async def test_many_lists_leave_no_consumers_behind(nats_server: NatsServer) -> None:
    """Each list() used to leave an ordered consumer on the server for 30 s,
    so ~1,000 create_task calls in a row (each lists the swarms) hit the
    stream's consumer limit (JetStream error 10026)."""
    async with connect(f"{nats_server.url}?namespace=listleak") as bus:
        await bus.put("swarms/a", "x")
        assert isinstance(bus, NatsBus)
        before = (await bus._js.stream_info(bus._stream)).state.consumer_count
        for _ in range(1200):
            assert [e.key for e in await bus.list("swarms/")] == ["swarms/a"]
        after = (await bus._js.stream_info(bus._stream)).state.consumer_count
        assert after <= before


async def test_bucket_uses_direct_get(nats_server: NatsServer) -> None:
    async with connect(f"{nats_server.url}?namespace=direct") as bus:
        assert isinstance(bus, NatsBus)
        info = await bus._js.stream_info(bus._stream)
        assert info.config.allow_direct is True


async def test_bucket_takes_atomic_batches_and_a_refused_one_writes_nothing(own_server: NatsServer) -> None:
    async with connect(f"{own_server.url}?namespace=atomic&bucket=atomic") as bus:
        assert isinstance(bus, NatsBus)
        assert bus._atomic and (await bus._js.stream_info(bus._stream)).config.allow_atomic is True
        before = (await bus._js.stream_info(bus._stream)).state.last_seq
        revisions = await bus.create_many([(f"a/{i}", b"v") for i in range(50)])
        assert revisions == list(range(before + 1, before + 51))  # one batch: consecutive sequences
        await bus.put("b/3", b"there")
        last = (await bus._js.stream_info(bus._stream)).state.last_seq
        # the batch that meets b/3 is refused whole, then each key is created alone
        got = await bus._create_many([(bus._ns(f"b/{i}"), b"v") for i in range(5)])
        assert got[3] is None and all(isinstance(r, int) and r > last for i, r in enumerate(got) if i != 3)
        assert (await bus._js.stream_info(bus._stream)).state.messages == 50 + 1 + 4


async def test_scan_pages_are_bounded_in_bytes(nats_server: NatsServer) -> None:
    """Big values end a page early (the server's 409 MaxBytes), and the scan
    carries on with the next page instead of failing or overrunning the
    client's buffer."""
    value = os.urandom(60_000)
    async with connect(f"{nats_server.url}?namespace=bigpages&timeout=20") as bus:
        await asyncio.gather(*(bus.put(f"big/{i:04d}", value) for i in range(300)))  # ~18 MB
        keys = [e.key async for e in bus.scan("big/", batch=1000)]
        assert sorted(keys) == [f"big/{i:04d}" for i in range(300)]


@pytest.mark.parametrize("call", ["publish", "unsubscribe"])
async def test_a_cancellation_nats_py_swallows_is_raised_again(nbus: EventBus, call: str) -> None:
    """nats-py's flush of pending writes (under publish and unsubscribe) ends in
    ``except CancelledError: pass``: a caller cancelled there would go on as if
    nothing happened (an agent loop told to stop would wait for work again). The
    bus raises the cancellation again."""
    assert isinstance(nbus, NatsBus)
    nc = nbus._nc
    original = nc._flush_pending
    entered = asyncio.Event()

    async def slow_flush(force_flush: bool = False) -> None:  # what nats-py does, slowly
        try:
            entered.set()
            await asyncio.sleep(GUARD)
        except asyncio.CancelledError:
            pass

    sub = nbus.subscribe("cancel/subject")
    await sub.start()
    nc._flush_pending = slow_flush  # type: ignore[method-assign]
    try:
        doing = nbus.publish("cancel/subject", b"x") if call == "publish" else sub.close()
        job = asyncio.ensure_future(doing)
        await asyncio.wait_for(entered.wait(), GUARD)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(job, GUARD)
    finally:
        nc._flush_pending = original  # type: ignore[method-assign]
        await sub.close()


def test_free_ports_are_never_handed_out_twice() -> None:
    """A 3-node cluster takes nine ports before any server binds one: the
    kernel may hand a port it just freed to the next bind(0), which made a
    node's route port its neighbour's monitor port (a cluster that never formed)."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
