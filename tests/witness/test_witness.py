"""The witness chain on memory, NATS and etcd (real servers)."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from infrafabric.bus import EventBus, connect
from infrafabric.errors import BusTimeoutError
from infrafabric.witness import GENESIS, Checkpoint, Filter, Signer, Witness, WitnessEntry, canonical
from infrafabric.witness.log import entry_key


async def fill(w: Witness, n: int, start: int = 0) -> list[WitnessEntry]:
    return [await w.append("IF.test", "op", {"i": i}, actor=f"s{i % 3}", trace_id=f"t{i % 2}")
            for i in range(start, start + n)]


async def test_append_builds_one_verifiable_chain(bus: EventBus) -> None:
    w = Witness(bus)
    entries = await fill(w, 30)
    assert [e.seq for e in entries] == list(range(1, 31))
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    report = await w.verify()
    assert report.ok and report.entries == 30 and report.head_hash == entries[-1].hash
    # a second client continues the same chain
    other = await fill(Witness(bus), 5, 30)
    assert other[0].seq == 31 and other[0].prev_hash == entries[-1].hash
    assert (await Witness(bus).verify()).entries == 35


async def test_a_long_lived_witness_keeps_only_its_last_entries_in_memory(bus: EventBus) -> None:
    """A server appends for hours: its ``written`` list must not grow without end."""
    kept = Witness(bus, keep_written=4)
    entries = await fill(kept, 10)
    assert list(kept.written) == entries[-4:]
    everything = Witness(bus, keep_written=None)  # (what a one-shot command asks for, for --trace)
    assert list(everything.written) == [] and await fill(everything, 6, 10) == list(everything.written)


async def test_hash_is_sha256_of_the_documented_canonical_encoding(bus: EventBus) -> None:
    e = await Witness(bus).append("IF.test", "op", {"b": 1.5, "a": "é"})
    stored = await bus.get(entry_key(1))
    assert stored is not None
    (obj,) = json.loads(stored.value)  # a block of one entry
    body = {k: v for k, v in obj.items() if k != "hash"}
    import hashlib

    assert hashlib.sha256(canonical(body)).hexdigest() == e.hash
    assert body["params"] == {"a": "é", "b": "1.5"}  # no floats in the chain
    assert b'"a":"\xc3\xa9"' in canonical(body)  # UTF-8, sorted, no spaces


async def test_secrets_are_redacted_by_construction(bus: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    token = "tok_9f2c1d7e5b3a4c8d"
    w = Witness(bus)
    await w.append("IF.chassis", "credential_issued",
                   {"swarm_id": "s1", "token": token, "nested": {"api_key": token, "scope": ["x"]},
                    "Authorization": f"Bearer {token}"})
    raw = b"".join([e.value async for e in bus.scan("witness/")])
    assert token.encode() not in raw and b"[redacted]" in raw
    assert token not in caplog.text


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "rewrite_params_keep_hash"])
async def test_tampering_is_caught_at_the_first_bad_entry(bus: EventBus, tamper: str) -> None:
    w = Witness(bus)
    await fill(w, 20)
    assert (await w.verify()).ok  # positive control
    e10 = await bus.get(entry_key(10))
    e11 = await bus.get(entry_key(11))
    assert e10 is not None and e11 is not None
    if tamper == "edit":
        (obj,) = json.loads(e10.value)
        obj["params"]["i"] = 999
        obj["hash"] = WitnessEntry.build(**{k: obj[k] for k in (
            "seq", "prev_hash", "component", "operation", "params", "actor", "trace_id", "severity",
            "entry_id", "ts")}).hash  # recompute its own hash: the link to 11 still breaks
        await bus.put(entry_key(10), canonical([obj]))
        bad = 11
    elif tamper == "rewrite_params_keep_hash":
        (obj,) = json.loads(e10.value)
        obj["operation"] = "nothing_to_see"
        await bus.put(entry_key(10), canonical([obj]))
        bad = 10
    elif tamper == "delete":
        await bus.delete(entry_key(10))
        bad = 10
    else:
        await bus.put(entry_key(10), e11.value)
        await bus.put(entry_key(11), e10.value)
        bad = 10
    report = await w.verify()
    assert not report.ok
    if tamper == "edit" and bus.scheme == "nats":
        # NATS scans in write order: the rewritten entry 10 comes after 11 and is
        # itself named (write-once entries written out of order); elsewhere the
        # first broken link, 11, is.
        assert report.first_bad_seq in (10, 11), report
    else:
        assert report.first_bad_seq == bad, report
    assert report.problem


async def test_truncation_and_rewrite_caught_by_a_checkpoint_kept_elsewhere(
        bus: EventBus, tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path)
    w = Witness(bus, signer=signer)
    await fill(w, 20)
    cp = await w.checkpoint()
    kept = Checkpoint.parse(cp.to_text())  # e.g. a file on another machine
    assert cp.size == 20
    assert (await w.verify(checkpoints=[kept], verifiers=[signer])).ok  # positive control
    # truncate the tail and drop the stored checkpoint: the chain alone still looks fine
    for seq in range(16, 21):
        await bus.delete(entry_key(seq))
    await bus.delete("witness/cp/000000000020")
    await bus.put("witness/head", json.dumps({"seq": 15, "hash": "x"}))
    alone = await Witness(bus).verify(verifiers=[signer])
    assert alone.ok and alone.entries == 15
    report = await Witness(bus).verify(checkpoints=[kept], verifiers=[signer])
    assert not report.ok and "truncated" in (report.problem or "")
    # a full, self-consistent rewrite of the same length
    for seq in range(1, 16):
        await bus.delete(entry_key(seq))
    await bus.delete("witness/head")
    forger = Witness(bus)
    await fill(forger, 20, start=100)
    assert (await forger.verify(use_stored=False)).ok
    rewritten = await forger.verify(checkpoints=[kept], verifiers=[signer], use_stored=False)
    assert not rewritten.ok and "rewritten" in (rewritten.problem or "")


async def test_forged_checkpoint_is_rejected(bus: EventBus, tmp_path: Path) -> None:
    real = Signer.load_or_create(tmp_path / "real")
    fake = Signer.load_or_create(tmp_path / "fake")
    w = Witness(bus, signer=real)
    await fill(w, 5)
    good = await w.checkpoint()
    assert (await w.verify(verifiers=[real])).ok
    forged = fake.sign(w.origin, good.size, good.head_hash)
    report = await w.verify(checkpoints=[forged], verifiers=[real], use_stored=False)
    assert not report.ok and "not the trusted key" in (report.problem or "")
    altered = Checkpoint(good.origin, good.size, "ab" * 32, good.key_name, good.signature)
    report = await w.verify(checkpoints=[altered], verifiers=[real], use_stored=False)
    assert not report.ok and "forged or altered" in (report.problem or "")


async def test_concurrent_writers_never_fork_the_chain(bus_url: str) -> None:
    buses = [await connect(bus_url) for _ in range(4)]
    try:
        writers = [Witness(b) for b in buses]
        await asyncio.gather(*(fill(w, 40, start=i * 1000) for i, w in enumerate(writers)))
        report = await Witness(buses[0]).verify()
        assert report.ok and report.entries == 160
        seen = [e.params["i"] async for e in writers[0].entries()]
        assert sorted(seen) == sorted(i * 1000 + j for i in range(4) for j in range(40))
    finally:
        for b in buses:
            await b.close()


async def test_a_new_writer_finds_the_head_however_far_past_the_hint(bus: EventBus) -> None:
    """A writer starting from the head hint (refreshed every HINT_EVERY
    entries) reads the positions ahead a widening window at a time: however
    many entries and blocks of several lie past the hint, and wherever the
    end falls in a window, it appends right after the last one."""
    first = Witness(bus)
    total = 0
    for extra in (1, 2, 3, 5, 14, 30, 63, 64, 97):
        singles = extra // 2
        await fill(first, singles, start=total)  # (first loses its place to the late writer: it walks too)
        await asyncio.gather(*(first.append("IF.test", "burst", {"i": total + singles + i})
                               for i in range(extra - singles)))  # group-committed: blocks of several
        total += extra
        entry = await Witness(bus).append("IF.test", "late", {"i": -1})
        total += 1
        assert entry.seq == total, extra
    report = await Witness(bus).verify()
    assert report.ok and report.entries == total


async def test_unknown_outcome_does_not_duplicate(bus: EventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    w = Witness(bus)
    await fill(w, 3)
    real_create = bus.create
    calls = 0

    async def create_then_time_out(key: str, value: bytes | str) -> int | None:
        nonlocal calls
        calls += 1
        rev = await real_create(key, value)
        if calls == 1:
            raise BusTimeoutError("simulated: applied, but the answer was lost")
        return rev

    monkeypatch.setattr(bus, "create", create_then_time_out)
    e = await w.append("IF.test", "after_timeout", {"x": 1})
    monkeypatch.undo()
    assert e.seq == 4
    ops = [x.operation async for x in w.entries()]
    assert ops.count("after_timeout") == 1
    assert (await w.verify()).ok


async def test_query_filters_and_trace(bus: EventBus) -> None:
    w = Witness(bus)
    await fill(w, 10)
    await w.append("IF.other", "boom", {}, severity="error", trace_id="t9")
    assert len(await w.get_operations(component="IF.test", operation="op")) == 10
    newest = await w.query(Filter(actor="s1"), limit=2)
    assert [e.params["i"] for e in newest] == [7, 4]
    assert [e.operation for e in await w.query(Filter(min_severity="warning"))] == ["boom"]
    assert [e.seq for e in await w.trace("t0")] == [1, 3, 5, 7, 9]


def test_verifier_text_round_trips_for_many_keys(tmp_path: Path) -> None:
    from infrafabric.witness import Verifier

    for i in range(40):  # base64 of random keys often contains '+'
        signer = Signer.load_or_create(tmp_path / str(i))
        again = Verifier.parse(signer.to_text())
        assert again.public == signer.public and again.id == signer.id


async def test_concurrent_appends_through_one_object_are_group_committed(bus: EventBus) -> None:
    w = Witness(bus)
    entries = await asyncio.gather(*(w.append("IF.test", "burst", {"i": i}) for i in range(300)))
    assert sorted(e.seq for e in entries) == list(range(1, 301))
    blocks = [b async for b in bus.scan("witness/e/")]
    assert len(blocks) < 300  # several entries per create
    assert (await w.verify()).ok
    assert [e.params["i"] async for e in w.entries()] == list(range(300))  # call order kept


async def test_periodic_checkpoints_are_signed_and_stored(bus: EventBus, tmp_path: Path) -> None:
    assert Signer.load(tmp_path) is None  # never created implicitly
    signer = Signer.load_or_create(tmp_path)
    w = Witness(bus, signer=Signer.load(tmp_path), checkpoint_every=10)
    await fill(w, 25)
    stored = await w.stored_checkpoints()
    assert [cp.size for cp in stored] == [10, 20]
    assert (await w.verify(verifiers=[signer])).checkpoints_checked == 2


async def test_another_operators_checkpoints_are_not_tampering(bus: EventBus, tmp_path: Path) -> None:
    """Two operators sign checkpoints of one chain with keys of the same (default)
    name. Each one's verify uses only the checkpoints its own key signed and notes
    the others; a checkpoint that claims a trusted key but fails its signature is
    still a forgery."""
    alice = Signer.load_or_create(tmp_path / "alice")
    bob = Signer.load_or_create(tmp_path / "bob")
    assert alice.name == bob.name and alice.id != bob.id
    await fill(Witness(bus), 5)
    await Witness(bus, signer=alice).checkpoint()
    await fill(Witness(bus), 5, start=5)
    await Witness(bus, signer=bob).checkpoint()

    for me, other in ((alice, bob), (bob, alice)):
        report = await Witness(bus).verify(verifiers=[me])
        assert report.ok, report.problem
        assert report.checkpoints_checked == 1 and report.entries == 10
        assert any(f"signed by a key not trusted here ({other.name} {other.id.hex()})" in n
                   for n in report.notes), report.notes

    size, head = await Witness(bus).head()
    forged = Checkpoint(Witness(bus).origin, size, head, alice.name, alice.id + bytes(64))
    await bus.put(f"witness/cp/{size + 1:012d}", forged.to_text())
    report = await Witness(bus).verify(verifiers=[alice])
    assert not report.ok and "forged or altered" in (report.problem or "")
