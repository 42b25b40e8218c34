"""The witness chain across OS processes, on the real engines."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from infrafabric.bus import connect
from infrafabric.bus.servers import LocalServer
from infrafabric.witness import Witness
from support import start_together

WORKER = str(Path(__file__).with_name("append_worker.py"))


def start_workers(url: str, count: int, n: int) -> list[subprocess.Popen[str]]:
    return start_together([[sys.executable, WORKER, url, f"w{i}", str(n)] for i in range(count)])


def acked(procs: list[subprocess.Popen[str]], timeout: float) -> dict[str, list[dict[str, object]]]:
    out = {}
    for i, p in enumerate(procs):
        stdout, stderr = p.communicate(timeout=timeout)
        assert p.returncode == 0, stderr
        out[f"w{i}"] = [json.loads(line) for line in stdout.splitlines()]
    return out




async def test_four_processes_append_one_linear_chain(engine_url: str) -> None:
    procs = start_workers(engine_url, 4, 500)
    results = await asyncio.to_thread(acked, procs, 300)
    seqs = sorted(r["seq"] for rs in results.values() for r in rs)  # type: ignore[type-var]
    assert seqs == list(range(1, 2001)), "every position owned by exactly one acknowledged append"
    async with connect(engine_url) as bus:
        w = Witness(bus)
        report = await w.verify()
        assert report.ok and report.entries == 2000, report
        by_worker: dict[str, list[int]] = {}
        async for e in w.entries():
            by_worker.setdefault(e.params["worker"], []).append(e.params["i"])
        assert all(v == list(range(500)) for v in by_worker.values())  # each writer's order kept




async def test_engine_restart_mid_append_loses_no_acknowledged_entry(own_engine: LocalServer) -> None:
    url = f"{own_engine.url}?timeout=2"
    procs = start_workers(url, 2, 300)
    assert procs[0].stdout is not None
    for _ in range(50):  # let some appends be acknowledged first
        procs[0].stdout.readline()
    own_engine.kill()
    time.sleep(0.5)
    own_engine.start()
    results = await asyncio.to_thread(acked, procs, 300)
    async with connect(url) as bus:
        w = Witness(bus)
        report = await w.verify()
        assert report.ok, report
        stored = {e.entry_id: e.seq async for e in w.entries()}
    for rs in results.values():
        for r in rs:  # every acknowledged entry (those printed after the first 50) is there
            assert stored.get(str(r["entry_id"])) == r["seq"], r
    assert report.entries >= 600 - 50
