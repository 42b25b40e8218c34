"""Cross-process races: 4 OS processes x 1,000 keys on the real engines (4
threads with their own event loops on memory://, which cannot cross processes).
Every key must have exactly one winner, and the stored value must be the winner's."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path

import pytest

from infrafabric.bus import connect
from support import start_together

sys.path.insert(0, str(Path(__file__).parent))
from race_worker import race

WORKER = str(Path(__file__).with_name("race_worker.py"))
RACERS, KEYS = 4, 1000


def race_processes(url: str, mode: str, revs: dict[str, int]) -> list[dict[str, object]]:
    procs = start_together([[sys.executable, WORKER, url, f"w{i}", str(KEYS), mode, json.dumps(revs)]
                            for i in range(RACERS)])
    try:
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def race_threads(url: str, mode: str, revs: dict[str, int]) -> list[dict[str, object]]:
    barrier = threading.Barrier(RACERS)
    results: list[dict[str, object]] = [{} for _ in range(RACERS)]

    def run(i: int) -> None:
        results[i] = asyncio.run(race(url, f"w{i}", KEYS, mode, revs, ready=barrier.wait))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


@pytest.mark.parametrize("mode", ["create", "update"])
async def test_cross_process_race_one_winner_per_key(bus_url: str, mode: str) -> None:
    revs: dict[str, int] = {}
    async with connect(bus_url) as bus:
        if mode == "update":
            for i in range(KEYS):
                rev = await bus.create(f"race/k{i}", "seed")
                assert rev is not None
                revs[f"race/k{i}"] = rev
        if bus_url.startswith("memory://"):
            results = await asyncio.to_thread(race_threads, bus_url, mode, revs)
        else:
            results = await asyncio.to_thread(race_processes, bus_url, mode, revs)
        owners: dict[str, list[str]] = {}
        for r in results:
            for key in r["won"]:  # type: ignore[attr-defined]
                owners.setdefault(key, []).append(str(r["worker"]))
        assert len(owners) == KEYS, f"{KEYS - len(owners)} keys have no winner"
        doubles = {k: v for k, v in owners.items() if len(v) != 1}
        assert not doubles, f"keys with several winners: {list(doubles.items())[:5]}"
        stored = {e.key: e.value.decode() for e in await bus.list("race/")}
        mismatched = [k for k, (w,) in owners.items() if stored.get(k) != w]
        assert not mismatched, f"stored value is not the winner's for {mismatched[:5]}"
        assert sum(len(r["won"]) for r in results) == KEYS  # type: ignore[arg-type]
