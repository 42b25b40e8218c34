"""The record layer: typed records and the one compare-and-swap retry policy,
on every backend (and across processes on the real engines)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from pydantic import BaseModel

from infrafabric.bus import EventBus, connect
from infrafabric.bus.records import Records, RetryPolicy
from infrafabric.errors import BusTimeoutError, ConflictError, CorruptRecordError, NotOwnerError


class Counter(BaseModel):
    n: int = 0
    by: list[str] = []


async def test_concurrent_mutates_lose_no_update(bus_url: str) -> None:
    """Four clients (each its own store and connection, so no shared lock)
    increment one record 25 times each: every increment lands once."""
    buses = [await connect(bus_url) for _ in range(4)]
    try:
        stores = [Records(b, "rec/", Counter) for b in buses]

        async def bump(store: Records[Counter], who: str) -> None:
            for _ in range(25):
                await store.mutate("c", lambda c, who=who: (c or Counter()).model_copy(
                    update={"n": (c or Counter()).n + 1, "by": [*(c or Counter()).by, who]}))

        await asyncio.gather(*(bump(s, f"w{i}") for i, s in enumerate(stores)))
        final = await stores[0].read("c")
        assert final is not None and final.n == 100
        assert sorted(set(final.by)) == ["w0", "w1", "w2", "w3"] and len(final.by) == 100
    finally:
        for b in buses:
            await b.close()


async def test_mutates_from_several_processes_lose_no_update(engine_url: str) -> None:
    script = textwrap.dedent(f"""
        import asyncio
        from pydantic import BaseModel
        from infrafabric.bus import connect
        from infrafabric.bus.records import Records

        class Counter(BaseModel):
            n: int = 0

        async def main():
            async with connect({engine_url!r}) as bus:
                store = Records(bus, "rec/", Counter)
                for _ in range(40):
                    await store.mutate("c", lambda c: Counter(n=(c or Counter()).n + 1))

        asyncio.run(main())
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    async with connect(engine_url) as bus:
        final = await Records(bus, "rec/", Counter).read("c")
        assert final is not None and final.n == 120


async def test_a_refusal_ends_the_loop_and_writes_nothing(bus: EventBus) -> None:
    store = Records(bus, "rec/", Counter)
    await store.put("c", Counter(n=1))
    before = await store.get("c")

    def refuse(c: Counter | None) -> Counter:
        raise NotOwnerError("not yours")

    with pytest.raises(NotOwnerError):
        await store.mutate("c", refuse)
    after = await store.get("c")
    assert before is not None and after is not None and after.revision == before.revision
    # change returning None writes nothing and returns what is there (None if absent)
    assert (await store.mutate("c", lambda c: None)) == after
    assert await store.mutate("absent", lambda c: None) is None
    assert await store.read("absent") is None


async def test_a_corrupt_record_is_named(bus: EventBus) -> None:
    rev = await bus.put("rec/bad", b'{"n": "many"}')
    store = Records(bus, "rec/", Counter)
    with pytest.raises(CorruptRecordError) as err:
        await store.read("bad")
    assert "rec/bad" in str(err.value) and f"revision {rev}" in str(err.value) and "n:" in str(err.value)
    assert not err.value.transient


class _Flaky:
    """A bus wrapper whose next update is applied and then reported as timed
    out (an unknown outcome), or always loses (for giving up)."""

    def __init__(self, bus: EventBus, *, lose_always: bool = False) -> None:
        self._bus = bus
        self.lose_always = lose_always
        self.timeouts = 1
        self.updates = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        self.updates += 1
        if self.lose_always:
            return None
        rev = await self._bus.update(key, value, revision)
        if self.timeouts:
            self.timeouts -= 1
            raise BusTimeoutError("deadline missed")
        return rev


async def test_an_unknown_outcome_is_read_back_not_applied_twice(bus: EventBus) -> None:
    await Records(bus, "rec/", Counter).put("c", Counter(n=0))
    flaky = _Flaky(bus)
    store = Records(flaky, "rec/", Counter)  # type: ignore[arg-type]
    written = await store.mutate("c", lambda c: Counter(n=(c or Counter()).n + 1))
    assert written is not None and written.value.n == 1
    assert flaky.updates == 1  # the write landed; the read-back saw it, so it was not retried
    assert (await Records(bus, "rec/", Counter).read("c")) == Counter(n=1)


async def test_steady_losing_gives_up_with_a_transient_conflict(bus: EventBus) -> None:
    await Records(bus, "rec/", Counter).put("c", Counter(n=0))
    flaky = _Flaky(bus, lose_always=True)
    store = Records(flaky, "rec/", Counter, retry=RetryPolicy(patience=0.01))  # type: ignore[arg-type]
    with pytest.raises(ConflictError) as err:
        await store.mutate("c", lambda c: Counter(n=5))
    assert err.value.transient and flaky.updates >= 1


class _CountingGets:
    """Counts what a store asks the bus to read."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def get(self, key: str) -> Any:
        self.reads += 1
        return await self._bus.get(key)

    async def list(self, prefix: str = "") -> Any:
        self.reads += 1
        return await self._bus.list(prefix)


async def test_a_mirrored_store_reads_its_copy_and_sees_every_change(bus_url: str) -> None:
    from infrafabric.bus.records import Mirrored

    async def until(_store: object, what: str, condition: Any) -> None:
        async with asyncio.timeout(10):  # a guard against a hang, never a latency assertion
            while not condition():  # noqa: ASYNC110 - the copy changes by a watch this test cannot await
                await asyncio.sleep(0.01)

    async with connect(bus_url) as mine, connect(bus_url) as theirs:
        counted = _CountingGets(mine)
        store = Mirrored(counted, "mir/", Counter)  # type: ignore[arg-type]
        other = Records(theirs, "mir/", Counter)
        await other.put("a", Counter(n=1))
        await store.follow()
        counted.reads = 0
        assert (await store.read("a")) == Counter(n=1) and await store.exists("a")
        assert await store.read("b") is None
        await store.put("b", Counter(n=2))  # its own write: read back at once, from the copy
        assert (await store.read("b")) == Counter(n=2)
        assert counted.reads == 0
        await other.mutate("a", lambda c: Counter(n=(c or Counter()).n + 10))  # another process's
        await until(store, "a's change", lambda: store._copy is not None
                    and store._copy["mir/a"].value.n == 11)
        assert await store.delete("b")
        assert await store.read("b") is None and [v.value.n for v in await store.list()] == [11]
        await asyncio.sleep(0.2)  # the delete's own event arrives: nothing brings b back
        assert await store.read("b") is None
        assert await other.delete("a")
        await until(store, "a's deletion", lambda: store._copy is not None and not store._copy)
        await store.stop()  # from now on the bus answers
        await other.put("c", Counter(n=3))
        before = counted.reads
        assert (await store.read("c")) == Counter(n=3) and counted.reads == before + 1


async def test_one_look_reads_each_record_once_per_operation(bus_url: str) -> None:
    """Within ``one_look`` (one hand-out), a Mirrored record not kept by a
    watch is read from the bus once, reads asked at once share a request,
    a write through it forgets it, and outside the block every read goes to
    the bus again."""
    from infrafabric.bus.records import Mirrored, one_look

    async with connect(bus_url) as mine, connect(bus_url) as theirs:
        counted = _CountingGets(mine)
        store = Mirrored(counted, "look/", Counter)  # type: ignore[arg-type]
        other = Records(theirs, "look/", Counter)
        await other.put("a", Counter(n=1))
        counted.reads = 0
        with one_look():
            got = await asyncio.gather(store.read("a"), store.read("a"), store.read("a"))
            assert got == [Counter(n=1)] * 3 and counted.reads == 1
            await other.put("a", Counter(n=2))  # another process's write: this look keeps what it read
            assert await store.read("a") == Counter(n=1) and counted.reads == 1
            with one_look():  # nested: the same look
                assert await store.read("a") == Counter(n=1) and counted.reads == 1
            await store.put("a", Counter(n=3))  # its own write: forgotten, read again
            assert await store.read("a") == Counter(n=3) and counted.reads == 2
        assert await store.read("a") == Counter(n=3) and counted.reads == 3  # outside: the bus
        assert await store.read("a") == Counter(n=3) and counted.reads == 4
