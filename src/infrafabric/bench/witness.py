"""``ifctl bench witness``: appends per second and the time and memory of
verifying a long chain, with the raw engine client measured in the same run.

Every run works in fresh namespaces (``?namespace=bench<run>-<phase>``, one
chain per phase) on the server of the URL; with ``cleanup`` it deletes every
key it wrote there afterwards.

What is measured:

* **appends/s** with 1 and 4 writers, each writer an OS process (a
  :mod:`infrafabric.bench._witness_worker`) with its own
  :class:`~infrafabric.witness.Witness` on the one chain, appending ``n``
  entries after ``warmup`` untimed ones. The writers connect and warm up,
  say ``ready``, and start together on ``go``; each reports its window in
  CLOCK_MONOTONIC (one clock system-wide on Linux), and appends/s is all
  their appends over the span from the first start to the last end.
  *sequential*: each writer awaits each append (one in flight); *concurrent*:
  each keeps ``inflight`` appends in flight, which group commit writes
  together (one create per block). Also reported: the creates the writers
  made, how many lost a race for a position (and were retried further on),
  entries per block, the client CPU per append, and each append's latency
  (the headline latency row is 1 writer, sequential).
* **raw**: the engine's own client creating fresh keys that hold the bytes
  of a one-entry block (nats-py ``kv.create`` on a bucket copied from ours;
  aetcd ``txn`` with ``version(key) == 0``) with the same processes,
  writers, warm-up and in-flight count. ``ratio`` = raw creates/s / appends/s
  (latency: append p50 / create p50), so above 1 means appending costs more
  than the one create it must make. The sides of each configuration run one
  after the other, alternating which goes first.
* **verify**: a chain of ``verify_entries`` entries, one per block (what
  many sequential writers leave: the most blocks per entry, the worst case
  for verify), built here with :meth:`WitnessEntry.build` and written with
  creates in flight (not timed); then :meth:`Witness.verify` runs in a
  separate process that reports its wall time and its own peak RSS
  (``VmHWM``, reset just before verifying). ``getrusage`` ``ru_maxrss`` is
  reported too but is not the verifier's own: on Linux exec keeps the peak of
  the memory it replaces, so a child reports at least its parent's peak at
  the time it was started (and this process's grows as it writes the chain).
  It is done at 1/5 of the entries and again at all of them: memory that does
  not grow with the chain keeps the peak RSS ratio near 1.

``memory://`` lives in one process: there the writers are tasks of this
process, there is no raw side, and the verifying process writes the chain
itself before verifying it (so its RSS holds the chain). Targets are reported
with ``pass`` and ``applies``; a benchmark never fails because of a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from infrafabric.bench._common import (
    BenchError,
    Progress,
    WorkerProcess,
    clean_namespace,
    latency_entry,
    machine_info,
    nats_scope,
    raw_client_errors,
    start_run,
    started_at,
    target_row,
    with_namespace,
)
from infrafabric.bench._witness_worker import CHAIN_INFLIGHT, run_role, write_chain
from infrafabric.bench.bus import Driver, open_raw
from infrafabric.bench.stats import QUANTILE_METHOD, ratio, summarize
from infrafabric.bus import connect, parse_url
from infrafabric.witness import Witness

__all__ = ["CONFIGS", "OPERATIONS", "PHASES", "TARGETS", "bench_witness"]

WORKER_MODULE = "infrafabric.bench._witness_worker"

#: (writers, mode) of each appends/s configuration, in the order they run
CONFIGS: list[tuple[int, str]] = [(1, "sequential"), (4, "sequential"), (1, "concurrent"),
                                  (4, "concurrent")]

#: operation id -> (label, what is timed)
OPERATIONS: dict[str, tuple[str, str]] = {
    "sequential_1w": ("1 writer, sequential",
                      "appends/s: one writer process awaiting each append"),
    "sequential_4w": ("4 writers, sequential",
                      "appends/s: four writer processes on one chain, each awaiting each append"),
    "concurrent_1w": ("1 writer, concurrent",
                      "appends/s: one writer process with `inflight` appends in flight "
                      "(group commit)"),
    "concurrent_4w": ("4 writers, concurrent",
                      "appends/s: four writer processes on one chain, each with `inflight` "
                      "appends in flight (group commit)"),
    "latency": ("append (1 writer, sequential)",
                "one append awaited at a time by one writer process; raw: one create of the "
                "bytes of a one-entry block"),
    "verify": ("verify", "Witness.verify() of a chain of one-entry blocks, in a separate "
                         "process: wall time and peak RSS, at 1/5 of the entries and at all"),
}

#: progress phases, in order (populate and cleanup are not timed)
PHASES: dict[str, str] = {
    **{f"{mode}_{w}w": OPERATIONS[f"{mode}_{w}w"][0] for w, mode in CONFIGS},
    "populate": "writing the chain to verify",
    "verify": "verify in another process",
    "cleanup": "cleaning up",
}

#: (id, operation, metric, compare, threshold, description, scope); scope is
#: "nats" (durable local NATS), "nats-100k" (durable local NATS, 100,000
#: entries verified) or "process" (a verifying process that holds no store)
TARGETS: list[tuple[str, str, str, str, float, str, str]] = [
    ("appends_4w_sequential", "sequential_4w", "ours.ops_per_s", ">=", 1000.0,
     ">= 1,000 appends/s with 4 writers, each awaiting each append", "nats"),
    ("appends_4w_concurrent", "concurrent_4w", "ours.ops_per_s", ">=", 1000.0,
     ">= 1,000 appends/s with 4 writers, `inflight` in flight each", "nats"),
    ("verify_100k_s", "verify", "full.seconds", "<=", 5.0,
     "verify 100,000 entries in <= 5 s", "nats-100k"),
    ("verify_memory", "verify", "peak_rss_ratio", "<=", 1.25,
     "verify's peak RSS at all entries <= 1.25x at 1/5 (memory does not grow with the chain)",
     "process"),
]

VERIFY_TARGET_ENTRIES = 100_000


async def bench_witness(
    url: str,
    n: int,
    *,
    verify_entries: int = VERIFY_TARGET_ENTRIES,
    inflight: int = 64,
    warmup: int | None = None,
    op_timeout: float = 10.0,
    server: dict[str, Any] | None = None,
    cleanup: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Benchmark the witness on the server of ``url`` (see the module docs).

    ``n`` timed appends per writer (after ``warmup`` untimed ones, default
    :func:`~infrafabric.bench.default_warmup`), ``inflight`` appends in
    flight per writer in the concurrent runs, a chain of ``verify_entries``
    to verify; ``op_timeout`` for any single engine call of the raw side;
    ``server`` describes the server and is copied into the result;
    ``cleanup`` deletes every key the run wrote. Returns a JSON-ready dict;
    never raises because of a timing.
    """
    if verify_entries < 5:
        raise ValueError("verify_entries must be at least 5")
    start = start_run(url, n, inflight, warmup, server)
    run, base, base_url, parsed = start.run, start.namespace, start.url, start.parsed
    warmup, server_info = start.warmup, start.server_info

    bench = _Bench(url, base, n, warmup, inflight, verify_entries, op_timeout, progress)
    async with raw_client_errors(), connect(base_url) as bus:
        raw: Driver | None = None
        extra: dict[str, Any] = {}
        try:
            raw, extra = await open_raw(parsed, bus, run, op_timeout, "witness")
            bench.raw = raw
            try:
                ops = await bench.measure()
            except BaseException:
                if cleanup:  # best effort, never masking what went wrong
                    with contextlib.suppress(Exception):
                        await bench.clean(None)
                raise
            cleaned = await bench.clean(progress) if cleanup else None
        finally:
            if raw is not None:
                with contextlib.suppress(Exception):
                    await raw.close(cleanup)

    engine = extra.pop("engine")
    server_info.update(extra)
    return {
        "benchmark": "witness",
        "backend": parsed.scheme,
        "url": base_url,
        "namespace": base,
        "namespaces": bench.namespaces(),
        "n": n,
        "warmup": warmup,
        "inflight": inflight,
        "writers": sorted({w for w, _ in CONFIGS}),
        "writers_are_processes": not bench.in_process,
        "verify_entries": verify_entries,
        "quantile_method": QUANTILE_METHOD,
        "units": {"latency": "ms", "throughput": "appends/s (raw: creates/s)",
                  "ratio": "raw creates/s / appends/s; latency: ours p50 / raw p50; "
                           ">1 = ours slower", "memory": "MB (2^20 bytes)"},
        "engine": engine,
        "server": server_info,
        "machine": machine_info(),
        "operations": ops,
        "targets": _targets(ops, parsed.scheme, server_info, verify_entries),
        "cleanup": cleaned,
        "started_at": started_at(start.started),
        "duration_s": start.duration_s(),
    }


class _Bench:
    """One run: its namespaces, the raw side, and the measurements."""

    raw: Driver | None = None

    def __init__(self, url: str, base: str, n: int, warmup: int, inflight: int,
                 verify_entries: int, op_timeout: float, progress: Progress | None) -> None:
        self.url = url
        self.base = base
        self.n = n
        self.warmup = warmup
        self.inflight = inflight
        self.verify_entries = verify_entries
        self.op_timeout = op_timeout
        self.progress = progress
        self.in_process = parse_url(url).scheme == "memory"
        self.tags = [f"{mode[0]}{w}" for w, mode in CONFIGS] + ["v"]

    def namespaces(self) -> dict[str, str]:
        return {tag: f"{self.base}-{tag}" for tag in self.tags}

    def tag_url(self, tag: str) -> str:
        return with_namespace(self.url, f"{self.base}-{tag}")

    def _progress(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    async def measure(self) -> dict[str, Any]:
        ops: dict[str, Any] = {}
        samples: dict[str, list[int]] = {}
        for k, (writers, mode) in enumerate(CONFIGS):
            op = f"{mode}_{writers}w"
            ops[op], latency = await self._appends(k, writers, mode)
            if op == "sequential_1w":
                samples = latency
        ops["latency"] = latency_entry(*OPERATIONS["latency"], samples,
                                       {side: self._calls(side, "sequential") for side in samples})
        ops["verify"] = await self._verify()
        return ops

    # -- appends/s -----------------------------------------------------------------

    def _calls(self, side: str, mode: str) -> str:
        what = "append" if side == "ours" else "create"
        how = (f"each {what} awaited before the next" if mode == "sequential"
               else f"{self.inflight} in flight per writer")
        if side == "ours":
            return f"Witness(bus).append(component, operation, params), {how}"
        engine = (self.raw.spec() or {}).get("engine") if self.raw is not None else None
        call = {"nats": "kv.create(key, one-entry block)",
                "etcd": "client.transaction([version(k) == 0], [put(k, one-entry block)])"}
        return f"{call.get(engine or '', 'create')}, {how}"

    async def _appends(self, k: int, writers: int, mode: str
                       ) -> tuple[dict[str, Any], dict[str, list[int]]]:
        op = f"{mode}_{writers}w"
        tag = f"{mode[0]}{writers}"
        inflight = 1 if mode == "sequential" else self.inflight
        sides = ["ours"] if self.raw is None else ["ours", "raw"]
        if k % 2:
            sides.reverse()  # ABBA across the configurations
        per_side: dict[str, dict[str, Any]] = {}
        latency: dict[str, list[int]] = {}
        for step, side in enumerate(sides):
            self._progress(op, step, len(sides))
            specs = [self._spec(side, tag, w, inflight) for w in range(writers)]
            results = await self._run(specs, f"{side} writer")
            per_side[side] = _aggregate(results, self.in_process)
            latency[side] = [x for r in results for x in r["latency_ns"]]
        self._progress(op, len(sides), len(sides))
        ours = per_side["ours"]
        ours["chain"] = await self._check_chain(tag, writers * (self.n + self.warmup))
        raw = per_side.get("raw")
        label, what = OPERATIONS[op]
        entry: dict[str, Any] = {
            "label": label, "what": what, "writers": writers, "mode": mode,
            "inflight_per_writer": inflight, "ours": ours, "raw": raw,
            "ratio": ratio(raw["ops_per_s"], ours["ops_per_s"]) if raw else None,
            "cpu_ratio": (ratio(ours["client_cpu_us_per_op"], raw["client_cpu_us_per_op"])
                          if raw else None),
            "order": sides,
            "calls": {side: self._calls(side, mode) for side in per_side},
        }
        return entry, latency

    def _spec(self, side: str, tag: str, writer: int, inflight: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"n": self.n, "warmup": self.warmup, "inflight": inflight,
                                "op_timeout": self.op_timeout}
        if side == "ours":
            spec.update(role="append", url=self.tag_url(tag), writer=writer)
        else:
            assert self.raw is not None
            spec.update(role="raw", raw=self.raw.spec(), kind=f"{tag}w{writer}")
        return spec

    async def _check_chain(self, tag: str, expected: int) -> dict[str, Any]:
        """The chain the writers left must verify and hold every append once."""
        async with connect(self.tag_url(tag)) as bus:
            report = await Witness(bus).verify()
        if not report.ok or report.entries != expected:
            raise BenchError(f"the chain of {self.base}-{tag} is not what the writers appended: "
                             f"{report.entries} entries verified of {expected} "
                             f"({report.problem or 'ok'})")
        return {"ok": report.ok, "entries": report.entries}

    async def _run(self, specs: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
        """Run the roles together: all set up, then all started at once; their results."""
        if self.in_process and all(s["role"] != "verify" for s in specs):
            return await _run_in_process(specs)
        return await _run_processes(specs, what, self._ready_within(specs),
                                    self._result_within(specs))

    def _ready_within(self, specs: list[dict[str, Any]]) -> float:
        work: int = max(s.get("populate", 0) + s.get("warmup", 0) for s in specs)
        return max(60.0, 3 * self.op_timeout) + work / 500

    def _result_within(self, specs: list[dict[str, Any]]) -> float:
        work: int = sum(s.get("n", 0) for s in specs) + self.verify_entries
        return max(120.0, 6 * self.op_timeout) + work / 200

    # -- verify ------------------------------------------------------------------

    async def _verify(self) -> dict[str, Any]:
        total = self.verify_entries
        fifth = total // 5
        vurl = self.tag_url("v")
        chain: dict[str, Any] = {"entries_per_block": 1}
        if self.in_process:
            # one process: the verifying process writes its own chain first
            chain["written_by"] = "the verifying process itself (memory:// is per process)"
            runs = {}
            for step, (name, count, ns) in enumerate((("fifth", fifth, "v5"), ("full", total, "v"))):
                self._progress("verify", step, 2)
                spec = {"role": "verify", "url": self.tag_url(ns), "populate": count}
                runs[name] = (await self._run([spec], "verify"))[0]
            self._progress("verify", 2, 2)
        else:
            chain["written_by"] = f"this process, {CHAIN_INFLIGHT} creates in flight, in order"
            runs = {}
            async with connect(vurl) as bus:
                t0 = time.perf_counter()
                last = await write_chain(bus, fifth, progress=self._progress)
                written = time.perf_counter() - t0
                self._progress("verify", 0, 2)
                runs["fifth"] = (await self._run([{"role": "verify", "url": vurl}], "verify"))[0]
                self._progress("verify", 1, 2)
                t0 = time.perf_counter()
                await write_chain(bus, total - fifth, start=fifth + 1, prev=last,
                                  progress=self._progress)
                written += time.perf_counter() - t0
                runs["full"] = (await self._run([{"role": "verify", "url": vurl}], "verify"))[0]
                self._progress("verify", 2, 2)
            chain["write_seconds"] = round(written, 2)
            chain["write_entries_per_s"] = round(total / written, 1) if written else None
        for name, expected in (("fifth", fifth), ("full", total)):
            r = runs[name]
            if not r["ok"] or r["entries"] != expected:
                raise BenchError(f"verify of the {expected}-entry chain did not pass: "
                                 f"{r['entries']} entries verified ({r['problem'] or 'ok'})")
        label, what = OPERATIONS["verify"]
        full, part = _verify_stats(runs["full"]), _verify_stats(runs["fifth"])
        return {
            "label": label, "what": what, "entries": total, "chain": chain,
            "fifth": part, "full": full,
            "peak_rss_ratio": ratio(full["peak_rss_mb"], part["peak_rss_mb"]),
            "peak_reset": bool(runs["full"]["peak_reset"] and runs["fifth"]["peak_reset"]),
            "calls": {"ours": "Witness(bus).verify() in a separate process (one scan of "
                              "witness/e/, every entry parsed and hashed)"},
        }

    async def clean(self, progress: Progress | None) -> dict[str, Any]:
        """Delete every key of the run's namespaces."""
        deleted = left = 0
        for ns in [self.base, *self.namespaces().values()]:
            async with connect(with_namespace(self.url, ns)) as bus:
                got = await clean_namespace(bus, progress)
            deleted += got["keys_deleted"]
            left += got["left"]
        return {"keys_deleted": deleted, "left": left}


def _verify_stats(r: dict[str, Any]) -> dict[str, Any]:
    seconds = r["seconds"]
    before, peak = r["rss_before_mb"], r["peak_rss_mb"]
    return {
        "entries": r["entries"], "seconds": round(seconds, 3),
        "entries_per_s": round(r["entries"] / seconds, 1) if seconds else None,
        "client_cpu_s": round(r["cpu_s"], 3),
        "rss_before_mb": before, "peak_rss_mb": peak, "peak_source": r["peak_source"],
        "ru_maxrss_mb": r["ru_maxrss_mb"], "rss_after_mb": r["rss_after_mb"],
        "growth_mb": round(peak - before, 1) if before is not None and r["peak_reset"] else None,
    }


def _aggregate(results: list[dict[str, Any]], in_process: bool) -> dict[str, Any]:
    """All writers of one side together: their appends over the span from the
    first start to the last end."""
    ops = sum(r["ops"] for r in results)
    t0 = min(r["t0_ns"] for r in results)
    t1 = max(r["t1_ns"] for r in results)
    seconds = (t1 - t0) / 1e9
    # writers in one process each measured the whole process's CPU time
    cpu = (max if in_process else sum)(r["cpu_s"] for r in results)
    out: dict[str, Any] = {
        "ops": ops, "seconds": round(seconds, 4),
        "ops_per_s": round(ops / seconds, 1) if seconds else None,
        "client_cpu_us_per_op": round(cpu / ops * 1e6, 1),
        "per_writer_ops_per_s": [round(r["ops"] / ((r["t1_ns"] - r["t0_ns"]) / 1e9), 1)
                                 for r in results],
        "start_spread_ms": round((max(r["t0_ns"] for r in results) - t0) / 1e6, 3),
        "latency": summarize([x for r in results for x in r["latency_ns"]]),
    }
    if "creates" in results[0]:
        creates = sum(r["creates"] for r in results)
        lost = sum(r["lost_creates"] for r in results)
        out.update(creates=creates, lost_creates=lost,
                   entries_per_block=round(ops / (creates - lost), 2) if creates > lost else None)
    return out


async def _run_in_process(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The roles as tasks of this process, started together once all are ready."""
    go: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    waiting = len(specs)

    def ready() -> None:
        nonlocal waiting
        waiting -= 1
        if waiting == 0:
            go.set_result(b"go\n")

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(run_role(s, ready, asyncio.shield(go))) for s in specs]
    return [t.result() for t in tasks]


async def _run_processes(specs: list[dict[str, Any]], what: str, ready_within: float,
                         result_within: float) -> list[dict[str, Any]]:
    """One worker process per spec: all ready, then ``go`` to all; their results."""
    started = await asyncio.gather(
        *(WorkerProcess.start(f"{what} {i}" if len(specs) > 1 else what, WORKER_MODULE,
                              [json.dumps(s)], ready_within) for i, s in enumerate(specs)),
        return_exceptions=True)
    workers = [w for w in started if isinstance(w, WorkerProcess)]
    try:
        for w in started:
            if isinstance(w, BaseException):
                raise w
        for w in workers:
            w.send(b"go\n")
        results = []
        for w in workers:
            try:
                line = await w.readline(result_within)
            except TimeoutError:
                line = b""
            try:
                result = json.loads(line) if line else None
            except ValueError:
                result = None
            if not isinstance(result, dict):
                await w.stop()
                tail = w.error_tail()
                raise BenchError(f"the {w.what} process gave no result"
                                 + (f": {line.decode(errors='replace').strip()}" if line else "")
                                 + (f"\n{tail}" if tail else ""))
            results.append(result)
        return results
    finally:
        for w in workers:
            await w.close()


def _targets(ops: dict[str, Any], backend: str, server: dict[str, Any],
             verify_entries: int) -> list[dict[str, Any]]:
    durable, nats_note = nats_scope(backend, server)
    out: list[dict[str, Any]] = []
    for tid, op, metric, compare, threshold, description, scope in TARGETS:
        entry = ops.get(op, {})
        head, _, stat = metric.partition(".")
        raw_value = (entry.get(head) or {}).get(stat) if stat else entry.get(head)
        value = None if raw_value is None else float(raw_value)
        if scope == "process":
            applies = backend != "memory"
            note = "" if applies else (
                "memory:// keeps the chain in the verifying process, so its RSS grows with the "
                "chain by design; growth_mb is verify's own")
        else:
            applies, note = durable, nats_note
            if scope == "nats-100k" and verify_entries != VERIFY_TARGET_ENTRIES:
                applies = False
                note = (f"this run verified {verify_entries:,} entries, the target is for "
                        f"{VERIFY_TARGET_ENTRIES:,}" + (f"; {note}" if note else ""))
        out.append(target_row(tid, description, op, metric, threshold, value, applies=applies,
                              note=note, compare=compare))
    return out
