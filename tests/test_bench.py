"""``ifctl bench bus`` / ``coordinator`` / ``witness`` and
:func:`infrafabric.bench.bench_bus` / :func:`~infrafabric.bench.bench_coordinator` /
:func:`~infrafabric.bench.witness.bench_witness`.

These tests check that the benchmark runs and that its report is complete and
consistent on every backend. They never assert a latency or throughput value:
timings belong in the benchmark's output, not in pass/fail.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import aetcd
import nats
import pytest
from click.testing import CliRunner
from rich.console import Console

from infrafabric.bench import bench_bus, bench_coordinator, nearest_rank, summarize
from infrafabric.bench._witness_worker import main as witness_worker_main
from infrafabric.bench.bus import OPERATIONS, TARGETS
from infrafabric.bench.coordinator import OPERATIONS as COORD_OPERATIONS
from infrafabric.bench.coordinator import PHASES, with_namespace
from infrafabric.bench.coordinator import TARGETS as COORD_TARGETS
from infrafabric.bench.waste import STRATEGIES as WASTE_STRATEGIES
from infrafabric.bench.waste import bench_waste, make_workload
from infrafabric.bench.witness import CONFIGS as WITNESS_CONFIGS
from infrafabric.bench.witness import OPERATIONS as WITNESS_OPERATIONS
from infrafabric.bench.witness import PHASES as WITNESS_PHASES
from infrafabric.bench.witness import TARGETS as WITNESS_TARGETS
from infrafabric.bench.witness import bench_witness
from infrafabric.bus import connect, parse_url
from infrafabric.bus.servers import EtcdServer, NatsServer
from infrafabric.cli import cli
from infrafabric.cli.bench import _chassis_lines, _chassis_table

N = 30
LATENCY_OPS = ("create_win", "create_lose", "update", "put_watch", "pubsub")
STATS = ("min", "p50", "p95", "p99", "max")


def check_result(r: dict[str, Any], backend: str, n: int) -> None:
    """Everything a report must contain, and every invariant between its numbers."""
    json.dumps(r)  # JSON-ready
    has_raw = backend != "memory"
    assert r["benchmark"] == "bus"
    assert r["backend"] == backend
    assert r["n"] == n
    assert r["warmup"] >= 0
    assert r["machine"]["cores"] >= 1
    assert r["engine"]["name"]
    assert r["engine"]["version"]
    assert (r["engine"]["client"] is not None) == has_raw
    assert r["quantile_method"].startswith("nearest-rank")
    assert set(r["operations"]) == set(OPERATIONS)
    for op in LATENCY_OPS:
        entry = r["operations"][op]
        sides = ("ours", "raw") if has_raw else ("ours",)
        for side in sides:
            s = entry[side]
            assert s["count"] == n, (op, side, s)
            values = [s[k] for k in STATS]
            assert all(v > 0 for v in values), (op, side, s)
            assert values == sorted(values), (op, side, s)
            assert s["min"] <= s["mean"] <= s["max"]
        assert set(entry["calls"]) == set(sides)
        if has_raw:
            assert isinstance(entry["ratio"], float) and entry["ratio"] > 0
            assert isinstance(entry["ratio_p99"], float) and entry["ratio_p99"] > 0
        else:
            assert entry["raw"] is None
            assert entry["ratio"] is None
    pubsub = r["operations"]["pubsub"]
    assert pubsub["cross_process"] is has_raw
    assert all(lost == 0 for lost in pubsub["lost"].values())
    tp = r["operations"]["throughput"]
    assert tp["ours"]["ops"] == n and tp["ours"]["ops_per_s"] > 0
    if has_raw:
        assert tp["raw"]["ops"] == n and tp["raw"]["ops_per_s"] > 0
        assert tp["ratio"] > 0
    else:
        assert tp["raw"] is None and tp["ratio"] is None
    assert [t["id"] for t in r["targets"]] == [t[0] for t in TARGETS]
    for t in r["targets"]:
        assert t["pass"] in (True, False, None)
        assert isinstance(t["applies"], bool)
        if has_raw:
            assert t["value"] is not None and t["pass"] is not None
        else:
            assert t["pass"] is None


def test_nearest_rank_and_summary() -> None:
    values = [float(v) for v in range(1, 101)]
    assert nearest_rank(values, 50) == 50
    assert nearest_rank(values, 95) == 95
    assert nearest_rank(values, 99) == 99
    assert nearest_rank(values, 100) == 100
    assert nearest_rank([7.0], 99) == 7.0
    s = summarize([3_000_000, 1_000_000, 2_000_000])  # ns
    assert s == {"count": 3, "min": 1.0, "p50": 2.0, "p95": 3.0, "p99": 3.0, "max": 3.0,
                 "mean": 2.0}
    assert summarize([])["count"] == 0


async def test_bench_memory(namespace: str) -> None:
    r = await bench_bus(f"memory://{namespace}", N, warmup=5, pace_ms=0)
    check_result(r, "memory", N)


async def test_bench_nats(nats_server: NatsServer, namespace: str) -> None:
    url = f"{nats_server.url}?namespace={namespace}"
    seen: list[str] = []
    r = await bench_bus(url, N, warmup=5, inflight=8, server={"sync_interval": "always"},
                        progress=lambda phase, done, total: seen.append(phase))
    check_result(r, "nats", N)
    assert set(seen) == set(OPERATIONS)
    assert r["server"]["our_bucket"] == "infrafabric"
    assert r["server"]["bucket_settings"]["source"] == "copied from KV_infrafabric"
    assert all(t["applies"] for t in r["targets"])
    # cleanup: nothing of ours left in the namespace, the raw bucket is gone
    async with connect(url) as bus:
        assert await bus.list("") == []
    nc = await nats.connect(nats_server.url)
    try:
        names = [si.config.name for si in await nc.jetstream().streams_info()]
    finally:
        await nc.close()
    assert f"KV_{r['server']['raw_bucket']}" not in names


async def test_bench_etcd(etcd_server: EtcdServer, namespace: str) -> None:
    url = f"{etcd_server.url}?namespace={namespace}"
    r = await bench_bus(url, N, warmup=5, inflight=8)
    check_result(r, "etcd", N)
    assert not any(t["applies"] for t in r["targets"])
    async with connect(url) as bus:
        assert await bus.list("") == []
    client = aetcd.Client(etcd_server.host, etcd_server.port)
    await client.connect()
    try:
        left = list(await client.get_prefix(r["server"]["raw_prefix"].encode()))
    finally:
        await client.close()
    assert left == []


def test_cli_json_on_given_bus(nats_server: NatsServer, namespace: str) -> None:
    url = f"{nats_server.url}?namespace={namespace}"
    result = CliRunner().invoke(cli, ["--bus", url, "bench", "bus", "--n", "10", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)  # progress goes to stderr only
    check_result(r, "nats", 10)
    assert r["exit_code"] == 0
    assert r["server"]["managed"] is False
    assert r["inflight"] == 64


def test_cli_starts_and_removes_a_durable_server(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(
        cli, ["bench", "bus", "--backend", "nats", "--n", "10", "--inflight", "4", "--json",
              "--why"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)
    check_result(r, "nats", 10)
    assert r["server"]["managed"] is True
    assert r["server"]["sync_interval"] == "always"
    assert all(t["applies"] for t in r["targets"])
    assert r["why"] and any("CLOCK_MONOTONIC" in line for line in r["why"])
    assert list(tmp_path.glob("if-nats-*")) == []  # data directory removed


def test_cli_human_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(cli, ["bench", "bus", "--backend", "memory", "--n", "10"])
    assert result.exit_code == 0, result.output + result.stderr
    out = result.stdout
    for text in ("create win", "update CAS", "put→watch", "pub→sub in-proc", "throughput",
                 "target"):
        assert text in out


def test_cli_falsify_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(
        cli, ["bench", "bus", "--backend", "etcd", "--mode=falsify", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)
    assert r["mode"] == "falsify" and r["would_fail"] is False
    names = {c["check"] for c in r["checks"]}
    assert {"etcd binary", "client library aetcd", "n sane"} <= names


def test_cli_falsify_reports_unreachable_bus() -> None:
    result = CliRunner().invoke(
        cli, ["--bus", "nats://127.0.0.1:1", "bench", "bus", "--mode=falsify", "--json"])
    assert result.exit_code == 1
    r = json.loads(result.stdout)
    failed = [c["check"] for c in r["checks"] if not c["ok"]]
    assert failed == ["bus reachable"]


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "bus", "--n", "5"],
        ["bench", "bus", "--n", "many"],
        ["bench", "bus", "--inflight", "0"],
        ["bench", "bus", "--backend", "zookeeper"],
        ["--bus", "memory://", "bench", "bus", "--backend", "nats"],
        ["--bus", "bogus://x", "bench", "bus"],
    ],
)
def test_cli_bad_input_exits_2(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" or "error" in result.stdout


# -- ifctl bench coordinator ----------------------------------------------------

COORD_LATENCY_OPS = ("claim_win", "claim_lose", "push", "blocker")


def check_coordinator_result(r: dict[str, Any], backend: str, n: int) -> None:
    """Everything a coordinator report must contain, and its invariants (never a timing)."""
    json.dumps(r)  # JSON-ready
    has_raw = backend != "memory"
    assert r["benchmark"] == "coordinator"
    assert r["backend"] == backend
    assert r["n"] == n
    assert r["namespace"].startswith("bench")
    assert f"namespace={r['namespace']}" in r["url"]
    assert r["engine"]["name"] and r["engine"]["version"]
    assert (r["engine"]["client"] is not None) == has_raw
    assert r["quantile_method"].startswith("nearest-rank")
    assert set(r["operations"]) == set(COORD_OPERATIONS)
    total = n + r["warmup"]
    assert r["setup"]["tasks"] == total + n
    assert r["setup"]["claimed_record_bytes"] > 0
    for op in COORD_LATENCY_OPS:
        entry = r["operations"][op]
        # claim (lose) has no raw side: a claim that loses makes no CAS
        sides = ("ours", "raw") if has_raw and op != "claim_lose" else ("ours",)
        for side in sides:
            s = entry[side]
            assert s["count"] == n, (op, side, s)
            values = [s[k] for k in STATS]
            assert all(v > 0 for v in values), (op, side, s)
            assert values == sorted(values), (op, side, s)
            assert s["min"] <= s["mean"] <= s["max"]
        assert set(entry["calls"]) == set(sides)
        if len(sides) == 2:
            assert isinstance(entry["ratio"], float) and entry["ratio"] > 0
        else:
            assert entry["raw"] is None and entry["ratio"] is None
    lose = r["operations"]["claim_lose"]
    assert lose["returned_false"] == lose["calls_made"] == total  # every loser got False
    for op in ("push", "blocker"):
        entry = r["operations"][op]
        assert entry["cross_process"] is has_raw
        assert entry["lost"] == ({"ours": 0, "raw": 0} if has_raw else {"ours": 0})
        assert entry["message_bytes"] > 0
    sus = r["operations"]["sustained"]
    assert sus["tasks_claimed"] == n  # each sustained task claimed exactly once
    assert sus["ours"]["ops"] == n and sus["ours"]["ops_per_s"] > 0
    assert sus["ours"]["seconds_per_1000"] > 0
    if has_raw:
        assert sus["raw"]["ops"] == n and sus["raw"]["ops_per_s"] > 0 and sus["ratio"] > 0
    else:
        assert sus["raw"] is None and sus["ratio"] is None
    assert [t["id"] for t in r["targets"]] == [t[0] for t in COORD_TARGETS]
    for t in r["targets"]:
        assert t["pass"] in (True, False, None)
        assert isinstance(t["applies"], bool)
        measurable = has_raw or (t["metric"] != "ratio" and t["operation"] != "push")
        assert (t["value"] is not None) is measurable, t
        assert (t["pass"] is not None) is measurable, t
    one_node = r["server"].get("nodes", 1) == 1  # on a cluster no target applies (see check_topology_both)
    floors = [t for t in r["targets"] if t["id"].startswith("floor_")]
    assert len(floors) == 4 and all(t["applies"] is one_node for t in floors)
    etcd = next(t for t in r["targets"] if t["id"] == "etcd_claim_p95")
    assert etcd["applies"] is (backend == "etcd" and one_node)


async def test_bench_coordinator_memory() -> None:
    seen: list[str] = []
    r = await bench_coordinator("memory://", N, warmup=5, pace_ms=0,
                                progress=lambda phase, done, total: seen.append(phase))
    check_coordinator_result(r, "memory", N)
    assert set(seen) == set(PHASES)
    assert r["cleanup"] == {"keys_deleted": r["cleanup"]["keys_deleted"], "left": 0}


async def test_bench_coordinator_nats(nats_server: NatsServer, namespace: str) -> None:
    url = f"{nats_server.url}?namespace={namespace}"
    r = await bench_coordinator(url, N, warmup=5, inflight=8, server={"sync_interval": "always"})
    check_coordinator_result(r, "nats", N)
    assert r["namespace"] != namespace  # a fresh namespace, whatever the URL said
    assert all(t["applies"] for t in r["targets"] if t["id"] != "etcd_claim_p95")
    assert r["cleanup"]["keys_deleted"] >= 2 * N + 5 + 2 and r["cleanup"]["left"] == 0
    async with connect(r["url"]) as bus:
        assert await bus.list("") == []
    async with connect(url) as bus:
        assert await bus.list("") == []  # the URL's own namespace was never touched
    nc = await nats.connect(nats_server.url)
    try:
        names = [si.config.name for si in await nc.jetstream().streams_info()]
    finally:
        await nc.close()
    assert f"KV_{r['server']['raw_bucket']}" not in names


async def test_bench_coordinator_etcd(etcd_server: EtcdServer) -> None:
    r = await bench_coordinator(etcd_server.url, N, warmup=5, inflight=8)
    check_coordinator_result(r, "etcd", N)
    nats_targets = [t for t in r["targets"] if t["id"] in ("claim_p95", "push_p99")]
    assert nats_targets and not any(t["applies"] for t in nats_targets)
    async with connect(r["url"]) as bus:
        assert await bus.list("") == []
    client = aetcd.Client(etcd_server.host, etcd_server.port)
    await client.connect()
    try:
        left = list(await client.get_prefix(r["server"]["raw_prefix"].encode()))
    finally:
        await client.close()
    assert left == []


def test_with_namespace_replaces_only_the_namespace() -> None:
    url = with_namespace("nats://127.0.0.1:4222?namespace=prod&timeout=2", "bench1")
    assert url == "nats://127.0.0.1:4222?namespace=bench1&timeout=2"
    assert with_namespace("memory://", "b2") == "memory://default?namespace=b2"


def test_cli_coordinator_json_on_given_bus(nats_server: NatsServer, namespace: str) -> None:
    url = f"{nats_server.url}?namespace={namespace}"
    result = CliRunner().invoke(
        cli, ["--bus", url, "bench", "coordinator", "--n", "10", "--inflight", "4", "--json",
              "--why"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)  # progress goes to stderr only
    check_coordinator_result(r, "nats", 10)
    assert r["exit_code"] == 0
    assert r["server"]["managed"] is False
    assert r["cleanup"]["left"] == 0
    assert r["why"] and any("CLOCK_MONOTONIC" in line for line in r["why"])


def test_cli_coordinator_starts_and_removes_a_durable_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(
        cli, ["bench", "coordinator", "--backend", "etcd", "--n", "10", "--inflight", "4",
              "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)
    check_coordinator_result(r, "etcd", 10)
    assert r["server"]["managed"] is True
    assert r["cleanup"] is None  # the whole server goes away instead
    assert list(tmp_path.glob("if-etcd-*")) == []  # data directory removed


def test_cli_coordinator_human_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(cli, ["bench", "coordinator", "--backend", "memory", "--n", "10"])
    assert result.exit_code == 0, result.output + result.stderr
    out = result.stdout
    for text in ("bench coordinator", "claim win", "claim lose", "push in-proc",
                 "blocker in-proc", "claims/s", "1,000 claims take", "returned False",
                 "target seeds' floor"):
        assert text in out, text


def test_cli_coordinator_falsify_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(
        cli, ["bench", "coordinator", "--backend", "nats", "--mode=falsify", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)
    assert r["mode"] == "falsify" and r["would_fail"] is False
    names = {c["check"] for c in r["checks"]}
    assert {"nats-server binary", "client library nats-py", "module infrafabric.coordinator",
            "subscriber module", "n sane"} <= names


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "coordinator", "--n", "5"],
        ["bench", "coordinator", "--inflight", "0"],
        ["bench", "coordinator", "--backend", "zookeeper"],
        ["--bus", "memory://", "bench", "coordinator", "--backend", "etcd"],
        ["--bus", "bogus://x", "bench", "coordinator"],
    ],
)
def test_cli_coordinator_bad_input_exits_2(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" or "error" in result.stdout


# -- ifctl bench witness --------------------------------------------------------

WITNESS_N = 30
WITNESS_VERIFY = 300


def check_witness_result(r: dict[str, Any], backend: str, n: int, verify_entries: int) -> None:
    """Everything a witness report must contain, and its invariants (never a timing)."""
    json.dumps(r)  # JSON-ready
    has_raw = backend != "memory"
    assert r["benchmark"] == "witness"
    assert r["backend"] == backend
    assert r["n"] == n and r["verify_entries"] == verify_entries
    assert r["warmup"] >= 0
    assert r["writers"] == [1, 4]
    assert r["writers_are_processes"] is has_raw
    assert r["namespace"].startswith("bench")
    assert f"namespace={r['namespace']}" in r["url"]
    assert r["engine"]["name"] and r["engine"]["version"]
    assert (r["engine"]["client"] is not None) == has_raw
    assert r["quantile_method"].startswith("nearest-rank")
    assert set(r["operations"]) == set(WITNESS_OPERATIONS)
    for writers, mode in WITNESS_CONFIGS:
        entry = r["operations"][f"{mode}_{writers}w"]
        assert entry["writers"] == writers and entry["mode"] == mode
        assert entry["inflight_per_writer"] == (1 if mode == "sequential" else r["inflight"])
        ours = entry["ours"]
        assert ours["ops"] == writers * n and ours["ops_per_s"] > 0 and ours["seconds"] > 0
        assert len(ours["per_writer_ops_per_s"]) == writers
        assert all(v > 0 for v in ours["per_writer_ops_per_s"])
        assert ours["start_spread_ms"] >= 0
        assert ours["latency"]["count"] == writers * n
        # every append is in the chain exactly once, and the chain verifies
        assert ours["chain"] == {"ok": True, "entries": writers * (n + r["warmup"])}
        won = ours["creates"] - ours["lost_creates"]
        assert 1 <= won <= writers * n
        assert ours["entries_per_block"] == round(writers * n / won, 2)
        if writers == 1:
            assert ours["lost_creates"] == 0  # nobody to lose to
        if (writers, mode) == (1, "sequential"):
            assert ours["creates"] == n and ours["entries_per_block"] == 1.0
        sides = {"ours", "raw"} if has_raw else {"ours"}
        assert set(entry["calls"]) == sides and set(entry["order"]) == sides
        if has_raw:
            assert entry["raw"]["ops"] == writers * n and entry["raw"]["ops_per_s"] > 0
            assert entry["raw"]["latency"]["count"] == writers * n
            assert entry["ratio"] > 0 and entry["cpu_ratio"] > 0
        else:
            assert entry["raw"] is None and entry["ratio"] is None
    lat = r["operations"]["latency"]
    assert lat["ours"]["count"] == n
    values = [lat["ours"][k] for k in STATS]
    assert all(v > 0 for v in values) and values == sorted(values)
    if has_raw:
        assert lat["raw"]["count"] == n and lat["ratio"] > 0
    else:
        assert lat["raw"] is None and lat["ratio"] is None
    v = r["operations"]["verify"]
    assert v["entries"] == verify_entries
    assert v["full"]["entries"] == verify_entries
    assert v["fifth"]["entries"] == verify_entries // 5
    for run in (v["full"], v["fifth"]):
        assert run["seconds"] > 0 and run["entries_per_s"] > 0
        assert run["peak_rss_mb"] > 0 and run["rss_before_mb"] > 0
    assert v["peak_rss_ratio"] > 0
    assert v["chain"]["entries_per_block"] == 1
    assert ("write_seconds" in v["chain"]) is has_raw  # memory://: written by the verifier
    assert [t["id"] for t in r["targets"]] == [t[0] for t in WITNESS_TARGETS]
    for t in r["targets"]:
        assert t["value"] is not None and t["pass"] in (True, False)
        assert isinstance(t["applies"], bool)
    by_id = {t["id"]: t for t in r["targets"]}
    assert by_id["verify_100k_s"]["applies"] is False  # not 100,000 entries here
    assert by_id["verify_memory"]["applies"] is has_raw


async def test_bench_witness_memory() -> None:
    seen: list[str] = []
    r = await bench_witness("memory://", WITNESS_N, verify_entries=WITNESS_VERIFY, warmup=5,
                            inflight=8, progress=lambda phase, done, total: seen.append(phase))
    check_witness_result(r, "memory", WITNESS_N, WITNESS_VERIFY)
    assert set(seen) == set(WITNESS_PHASES) - {"populate"}  # the verifier writes its own chain
    assert not any(t["applies"] for t in r["targets"])
    assert r["cleanup"]["left"] == 0


async def test_bench_witness_nats(nats_server: NatsServer, namespace: str) -> None:
    url = f"{nats_server.url}?namespace={namespace}"
    seen: list[str] = []
    r = await bench_witness(url, WITNESS_N, verify_entries=WITNESS_VERIFY, warmup=5, inflight=8,
                            server={"sync_interval": "always"},
                            progress=lambda phase, done, total: seen.append(phase))
    check_witness_result(r, "nats", WITNESS_N, WITNESS_VERIFY)
    assert set(seen) == set(WITNESS_PHASES)
    assert r["server"]["bucket_settings"]["source"] == "copied from KV_infrafabric"
    by_id = {t["id"]: t for t in r["targets"]}
    assert by_id["appends_4w_sequential"]["applies"] and by_id["appends_4w_concurrent"]["applies"]
    # cleanup: none of the run's namespaces holds a key, the raw bucket is gone
    assert r["cleanup"]["keys_deleted"] >= WITNESS_VERIFY and r["cleanup"]["left"] == 0
    for ns in [r["namespace"], *r["namespaces"].values()]:
        async with connect(f"{nats_server.url}?namespace={ns}") as bus:
            assert await bus.list("") == []
    nc = await nats.connect(nats_server.url)
    try:
        names = [si.config.name for si in await nc.jetstream().streams_info()]
    finally:
        await nc.close()
    assert f"KV_{r['server']['raw_bucket']}" not in names


async def test_bench_witness_etcd(etcd_server: EtcdServer) -> None:
    r = await bench_witness(etcd_server.url, WITNESS_N, verify_entries=WITNESS_VERIFY, warmup=5,
                            inflight=8)
    check_witness_result(r, "etcd", WITNESS_N, WITNESS_VERIFY)
    assert not any(t["applies"] for t in r["targets"] if t["id"] != "verify_memory")
    assert r["cleanup"]["left"] == 0
    client = aetcd.Client(etcd_server.host, etcd_server.port)
    await client.connect()
    try:
        left = list(await client.get_prefix(r["server"]["raw_prefix"].encode()))
    finally:
        await client.close()
    assert left == []


def test_witness_worker_usage() -> None:
    assert witness_worker_main([]) == 2
    assert witness_worker_main(['{"role": "fly"}']) == 2
    assert witness_worker_main(["not json"]) == 2


def test_cli_witness_json_on_given_bus(nats_server: NatsServer, namespace: str) -> None:
    url = f"{nats_server.url}?namespace={namespace}"
    result = CliRunner().invoke(
        cli, ["--bus", url, "bench", "witness", "--n", "10", "--inflight", "4",
              "--verify-entries", str(WITNESS_VERIFY), "--json", "--why"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)  # progress goes to stderr only
    check_witness_result(r, "nats", 10, WITNESS_VERIFY)
    assert r["exit_code"] == 0
    assert r["server"]["managed"] is False
    assert r["cleanup"]["left"] == 0
    assert r["why"] and any("CLOCK_MONOTONIC" in line for line in r["why"])


def test_cli_witness_human_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(cli, ["bench", "witness", "--backend", "memory", "--n", "10",
                                      "--verify-entries", "100"])
    assert result.exit_code == 0, result.output + result.stderr
    out = result.stdout
    for text in ("bench witness", "sequential", "concurrent", "appends", "lost",
                 "verify in a separate process", "peak RSS ratio", "target verify"):
        assert text in out, text


def test_cli_witness_falsify_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(
        cli, ["bench", "witness", "--backend", "etcd", "--mode=falsify", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)
    assert r["mode"] == "falsify" and r["would_fail"] is False
    names = {c["check"] for c in r["checks"]}
    assert {"etcd binary", "client library aetcd", "module infrafabric.bench._witness_worker",
            "n sane"} <= names


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "witness", "--n", "5"],
        ["bench", "witness", "--verify-entries", "3"],
        ["bench", "witness", "--verify-entries", "lots"],
        ["bench", "witness", "--inflight", "0"],
        ["bench", "witness", "--pace-ms", "1"],  # no deliveries to pace here
        ["bench", "witness", "--backend", "zookeeper"],
        ["--bus", "memory://", "bench", "witness", "--backend", "nats"],
    ],
)
def test_cli_witness_bad_input_exits_2(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" or "error" in result.stdout


# -- ifctl bench waste ----------------------------------------------------------

DETERMINISTIC = ("seed", "model", "workload", "strategies", "budgets", "reputations", "ledger_entries",
                 "targets")


async def test_bench_waste_is_deterministic() -> None:
    a = await bench_waste("memory://", seed=1, tasks=60, swarms=8)
    b = await bench_waste("memory://", seed=1, tasks=60, swarms=8)
    assert a["namespace"] != b["namespace"]
    assert {k: a[k] for k in DETERMINISTIC} == {k: b[k] for k in DETERMINISTIC}
    c = await bench_waste("memory://", seed=2, tasks=60, swarms=8)
    assert c["workload"] != a["workload"]


def test_waste_workload_is_seeded() -> None:
    w1, w2 = make_workload(7, 30, 5), make_workload(7, 30, 5)
    assert w1 == w2
    for s in w1.swarms:
        assert 2 <= len(s.profile.capabilities) <= 5
        assert isinstance(s.profile.cost_per_hour_micros, int)
        assert all(s.skill[c] >= Decimal("0.97") for c in s.profile.capabilities)
        assert all(s.skill[c] <= Decimal("0.3") for c in s.skill if c not in s.profile.capabilities)
        assert s.profile.reputation == 1  # the governor learns it from outcomes
    declared = {c for s in w1.swarms for c in s.profile.capabilities}
    for t in w1.tasks:
        assert 1 <= len(t.capabilities) <= 3 and set(t.capabilities) <= declared


async def test_bench_waste_structure_and_model_property() -> None:
    r = await bench_waste("memory://", seed=1)
    assert r["benchmark"] == "waste" and r["backend"] == "memory"
    assert set(r["strategies"]) == set(WASTE_STRATEGIES)
    for s in r["strategies"].values():
        assert isinstance(s["total_spend_micros"], int)
        assert 0 <= s["wasted_spend_micros"] <= s["total_spend_micros"]
        assert 0.0 <= s["waste"] <= 1.0
        assert s["tasks"] == 200 and s["tasks_done"] + s["tasks_abandoned"] == 200
        assert s["attempts"] >= s["tasks"]
        assert s["wasted_spend_micros"] <= s["failed_spend_micros"] + s["unqualified_spend_micros"]
    gov, rnd = r["strategies"]["governor"], r["strategies"]["random"]
    # a property of the model, not a timing
    assert gov["waste"] < rnd["waste"]
    assert gov["unqualified_spend_micros"] == 0 and gov["fallbacks"] == 0
    assert sum(b["spent_micros"] for b in r["budgets"].values()) == gov["total_spend_micros"]
    assert r["strategies"]["floor"]["unqualified_spend_micros"] == 0
    # outcomes fed back: a swarm that failed has a reputation below 1, one never used keeps 1
    failed_somewhere = any(Decimal(v) < 1 for v in r["reputations"].values())
    assert failed_somewhere == (gov["attempts_failed"] > 0)
    assert r["ledger_entries"] == gov["attempts"]
    assert {t["id"] for t in r["targets"]} == {"governor_waste", "random_waste"}
    assert all(t["applies"] and t["pass"] is not None for t in r["targets"])
    assert r["cleanup"] is not None and r["cleanup"]["left"] == 0


def test_cli_waste_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(cli, ["bench", "waste", "--seed", "3", "--tasks", "50",
                                      "--swarms", "6", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)
    assert r["backend"] == "memory" and r["seed"] == 3 and r["workload"]["tasks"] == 50
    assert r["strategies"]["governor"]["waste"] <= r["strategies"]["random"]["waste"]


def test_cli_waste_human(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(cli, ["bench", "waste", "--tasks", "40", "--why"])
    assert result.exit_code == 0, result.output + result.stderr
    for text in ("bench waste", "random", "governor", "floor", "target governor waste", "why"):
        assert text in result.stdout, text


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "waste", "--tasks", "0"],
        ["bench", "waste", "--seed", "one"],
        ["bench", "waste", "--swarms", "-1"],
        ["bench", "waste", "--backend", "zookeeper"],
        ["bench", "waste", "--bogus"],
    ],
)
def test_cli_waste_bad_input_exits_2(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output


# -- ifctl bench chassis --------------------------------------------------------


def test_cli_chassis_json_reports_every_limit_per_workload_against_raw_wasmtime() -> None:
    result = CliRunner().invoke(cli, ["bench", "chassis", "--n", "20", "--no-python", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)
    assert r["benchmark"] == "chassis" and r["engine"]["name"] == "wasmtime"
    task_workloads = ["trivial", "hash", "calls", "loop"]
    assert set(r["overheads"]) == set(task_workloads)  # the CLI prints JSON keys sorted
    variants = ["raw", "memory", "epoch", "cpu_share", "fuel", "all", "sandbox", "sandbox_fuel", "process"]
    assert set(r["operations"]) == {"compile", "cache_load"} | {f"{w}.{v}" for w in task_workloads
                                                                for v in variants}
    for workload in task_workloads:
        raw = r["operations"][f"{workload}.raw"]["ours"]
        assert raw["count"] >= (20 if workload == "trivial" else 8)
        assert r["operations"][f"{workload}.raw"]["ratio"] == 1.0
        for variant in variants[1:]:
            op = r["operations"][f"{workload}.{variant}"]
            assert op["ours"]["count"] == raw["count"]
            if variant == "process":  # beside a raw run of its own, with no epoch thread ticking here
                assert op["raw"]["count"] == raw["count"] and op["raw"] != raw
            else:
                assert op["raw"] == raw  # sampled in the same rounds
            assert 0 < op["ours"]["p50"] <= op["ours"]["p99"] <= op["ours"]["max"]
            assert op["ratio"] == r["overheads"][workload][variant]
    assert r["cache"]["disk_writes"] >= r["cache"]["compiled"] > 0
    # the guests really did the work: counted by the metered engine
    assert r["fuel_used"]["loop"] > 6_000_000 and r["fuel_used"]["hash"] > 8 * 8 * 65536
    # a verdict per limit per workload, and the absolute targets; Python's are not measured here
    ids = {t["id"]: t for t in r["targets"]}
    for workload in task_workloads:
        for limit in ("memory", "epoch", "cpu_share", "fuel", "all"):
            row = ids[f"{workload}_{limit}"]
            assert row["threshold"] == 1.05 and row["value"] == r["overheads"][workload][limit]
            assert row["pass"] is (row["value"] <= 1.05)
    assert ids["trivial_task_p50"]["value"] == r["operations"]["trivial.sandbox"]["ours"]["p50"]
    assert ids["trivial_process_p50"]["value"] == r["operations"]["trivial.process"]["ours"]["p50"]
    for workload in ("hash", "calls", "loop"):
        assert ids[f"{workload}_process"]["value"] == r["overheads"][workload]["process"]
    assert "trivial_process" not in ids  # a trivial task's pipe round trip has its own target
    for missing in ("python_startup_p50", "python_compute_fuel"):
        assert ids[missing]["pass"] is None and not ids[missing]["applies"]
    # the human view of the same report: the matrix, the absolute targets, the count of limits within
    console = Console(width=200, record=True)
    console.print(_chassis_table(r))
    for line in _chassis_lines(r):
        console.print(line)
    human = console.export_text()
    assert all(w in human for w in (*task_workloads, "sandbox", "epoch", "process"))
    measured = [t for t in r["targets"] if t["metric"] == "ratio" and t["value"] is not None]
    assert f"{sum(1 for t in measured if t['pass'])} of {len(measured)} within" in human


def test_cli_chassis_falsify_and_bad_input() -> None:
    result = CliRunner().invoke(cli, ["bench", "chassis", "--mode=falsify", "--no-python", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["would_fail"] is False
    assert CliRunner().invoke(cli, ["bench", "chassis", "--n", "3"]).exit_code == 2


# -- ifctl bench coordinator --topology -----------------------------------------------


def check_topology_both(r: dict[str, Any], backend: str, n: int) -> None:
    """A --topology both report: both sections complete, every comparison row filled."""
    assert r["benchmark"] == "coordinator" and r["topology"] == "both" and r["backend"] == backend
    assert set(r["results"]) == {"single", "cluster"}
    single, cluster = r["results"]["single"], r["results"]["cluster"]
    check_coordinator_result(single, backend, n)
    check_coordinator_result(cluster, backend, n)
    assert "topology" not in single and single["server"].get("nodes", 1) == 1
    assert cluster["topology"] == "cluster" and cluster["server"]["nodes"] == 3
    assert len(parse_url(cluster["url"]).hosts) == 3
    assert cluster["server"]["managed"] is True
    # targets are defined for one node: reported on the cluster, never applied
    assert all(t["applies"] is False and "one node" in t["note"] for t in cluster["targets"])
    assert [t["id"] for t in cluster["targets"]] == [t[0] for t in COORD_TARGETS]
    comparison = r["comparison"]
    assert set(comparison) == {*COORD_LATENCY_OPS, "sustained"}
    for op in COORD_LATENCY_OPS:
        row = comparison[op]
        for key in ("single_p50", "cluster_p50", "single_p99", "cluster_p99", "ratio", "ratio_p99"):
            assert isinstance(row[key], float) and row[key] > 0, (op, key, row)
        assert row["single_p50"] == single["operations"][op]["ours"]["p50"]
        assert row["cluster_p50"] == cluster["operations"][op]["ours"]["p50"]
        if op != "claim_lose":
            assert row["raw_single_p50"] > 0 and row["raw_cluster_p50"] > 0 and row["raw_ratio"] > 0
    sus = comparison["sustained"]
    assert sus["single_ops_per_s"] > 0 and sus["cluster_ops_per_s"] > 0 and sus["ratio"] > 0
    assert sus["raw_single_ops_per_s"] > 0 and sus["raw_cluster_ops_per_s"] > 0


@pytest.mark.parametrize("backend", ["nats", "etcd"])
def test_cli_coordinator_topology_both(backend: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(
        cli, ["bench", "coordinator", "--topology", "both", "--backend", backend, "--n", "50",
              "--inflight", "8", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)
    check_topology_both(r, backend, 50)
    assert list(tmp_path.iterdir()) == []  # the server and the cluster are removed


def test_cli_coordinator_topology_human_and_cluster_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from infrafabric.bench.coordinator import compare_topologies
    from infrafabric.cli.bench import CLUSTER_NODES, _comparison_lines, _comparison_table

    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(
        cli, ["bench", "coordinator", "--topology", "cluster", "--backend", "nats", "--n", "10",
              "--inflight", "4", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)
    check_coordinator_result(r, "nats", 10)
    assert r["topology"] == "cluster" and r["server"]["nodes"] == CLUSTER_NODES
    assert r["server"]["replicas"] == 3 and "replicas=3" in r["url"]
    assert not any(t["applies"] for t in r["targets"])
    # the side-by-side table, from two reports (no second run needed)
    both: dict[str, Any] = {"benchmark": "coordinator", "topology": "both",
            "results": {"single": r, "cluster": r},
            "comparison": compare_topologies(r, r)}
    assert all(row["ratio"] == 1.0 for row in both["comparison"].values())
    lines = _comparison_lines(both)
    assert lines[0].startswith("sustained claims/s: single")
    assert any(line.startswith("single: target") for line in lines)
    table = _comparison_table(both["comparison"])
    assert [c.header for c in table.columns][:3] == ["operation\n(ms)", "single\np50", "clust.\np50"]


@pytest.mark.parametrize("topology", ["cluster", "both"])
def test_cli_coordinator_topology_falsify_changes_nothing(
        topology: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    for backend, binary in (("nats", "nats-server binary"), ("etcd", "etcd binary")):
        result = CliRunner().invoke(
            cli, ["bench", "coordinator", "--backend", backend, "--topology", topology,
                  "--mode=falsify", "--json"])
        assert result.exit_code == 0, result.output + result.stderr
        r = json.loads(result.stdout)
        assert r["mode"] == "falsify" and r["would_fail"] is False and r["topology"] == topology
        checks = {c["check"]: c for c in r["checks"]}
        assert checks[binary]["ok"] and checks["module infrafabric.bench.cluster"]["ok"]
        assert "3-node" in checks["topology"]["detail"]
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "coordinator", "--topology", "ring"],
        ["bench", "coordinator", "--topology", ""],
        ["bench", "coordinator", "--backend", "memory", "--topology", "cluster"],
        ["bench", "coordinator", "--backend", "memory", "--topology", "both", "--mode=falsify"],
        ["--bus", "memory://", "bench", "coordinator", "--topology", "both"],
    ],
)
def test_cli_coordinator_bad_topology_exits_2(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IF_BUS_URL", raising=False)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" or "error" in result.stdout


def test_raw_client_failures_are_bench_errors_not_internal_errors() -> None:
    import nats.js.errors

    from infrafabric.bench._common import BenchError, raw_client_errors

    async def fail(exc: Exception) -> None:
        async with raw_client_errors():
            raise exc

    with pytest.raises(BenchError, match="raw nats client failed: NoStreamResponseError"):
        asyncio.run(fail(nats.js.errors.NoStreamResponseError()))
    with pytest.raises(ValueError, match="our bug"):  # our own bugs stay internal errors
        asyncio.run(fail(ValueError("our bug")))
