"""``ifctl bench all``: every benchmark in one run, each figure beside its target
and the raw engine's figure from the same run. Timings are never asserted:
these tests check the figures are produced, complete and sane."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from infrafabric.bench._common import BenchError
from infrafabric.bench.all import BENCHMARKS, QUICK, Plan, bench_all, summary_rows
from infrafabric.bus.servers import free_port
from infrafabric.cli import cli

IFCTL = str(Path(sys.executable).with_name("ifctl"))


def ifctl(*args: str, tmp: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A real ``ifctl`` with its own state and temporary directories."""
    (tmp / "t").mkdir(exist_ok=True)
    full = {k: v for k, v in os.environ.items() if k != "IF_BUS_URL"}
    full.update(IF_HOME=str(tmp / "home"), TMPDIR=str(tmp / "t"), **(env or {}))
    return subprocess.run([IFCTL, *args], capture_output=True, text=True, env=full, timeout=170)


def check_report(r: dict[str, Any], backend: str) -> None:
    """Every benchmark's section, and one summary row per target with a number or a note."""
    assert r["benchmark"] == "all" and r["backend"] == backend and r["failed"] == []
    assert sorted(r["results"]) == sorted(BENCHMARKS)
    for name, report in r["results"].items():
        assert report["benchmark"] == name and "error" not in report, report
        assert report["targets"], name
        if name not in ("chassis",):
            assert report.get("backend", backend) == backend
    expected = [(name, t["id"]) for name in BENCHMARKS for t in r["results"][name]["targets"]]
    assert [(row["benchmark"], row["id"]) for row in r["summary"]] == expected
    for row in r["summary"]:
        assert set(row) >= {"benchmark", "id", "target", "value", "raw", "pass", "applies", "note"}
        assert isinstance(row["value"], float) or row["note"], row
        if row["value"] is not None:
            assert row["value"] >= 0 and row["pass"] in (True, False)
            assert row["ours"] is None or row["ours"] >= 0
        else:
            assert row["pass"] is None
    rows = {(row["benchmark"], row["id"]): row for row in r["summary"]}
    # the raw baseline sits beside our figure where the engine has one
    raw_expected = backend != "memory"
    for key in (("bus", "create_win_ratio"), ("coordinator", "claim_p95"),
                ("witness", "appends_4w_concurrent")):
        assert (rows[key]["raw"] is not None) is raw_expected, rows[key]
    assert rows[("chassis", "hash_all")]["raw"] > 0  # raw wasmtime, every backend
    assert rows[("waste", "random_waste")]["value"] > rows[("waste", "governor_waste")]["value"]
    python = rows[("chassis", "python_startup_p50")]
    assert python["value"] is None and "--quick" in python["note"]
    # the plan really was the quick one
    assert r["quick"] is True and r["plan"]["bus_n"] == QUICK.bus_n
    assert r["results"]["bus"]["n"] == QUICK.bus_n and r["results"]["waste"]["workload"]["tasks"] == 50


def test_quick_on_nats_as_a_real_process(tmp_path: Path) -> None:
    result = ifctl("bench", "all", "--quick", "--backend", "nats", "--json", tmp=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    r = json.loads(result.stdout)
    check_report(r, "nats")
    for name in ("bus", "coordinator", "witness", "waste"):
        server = r["results"][name]["server"]
        assert server["managed"] is True, server
    assert r["results"]["bus"]["server"]["sync_interval"] == "always"
    assert list((tmp_path / "t").iterdir()) == [], "temporary servers were not removed"


def test_quick_on_memory_for_humans_and_json() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", "all", "--quick", "--backend", "memory", "--json", "--why"],
                           env={"IF_BUS_URL": None})
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    check_report(r, "memory")
    assert any(line.startswith("witness (") for line in r["why"])
    human = runner.invoke(cli, ["bench", "all", "--quick", "--backend", "memory"],
                          env={"IF_BUS_URL": None, "COLUMNS": "200"})
    assert human.exit_code == 0, human.output
    for text in ("bench all on memory", "bus:", "coordinator:", "witness:", "chassis:", "waste:",
                 "claim (win) p95 <= 2.5 ms", "governor waste <= 5 % of spend", "raw", "skipped by --quick"):
        assert text in human.stdout, text


def test_falsify_changes_nothing(tmp_path: Path) -> None:
    for mode in ("--mode=falsify", "--mode=normal"):
        env = {"IF_BUS_URL": f"nats://127.0.0.1:{free_port()}"} if mode == "--mode=normal" else None
        result = ifctl("bench", "all", "--quick", "--backend", "nats", mode, "--json", tmp=tmp_path, env=env)
        if mode == "--mode=normal":  # an unreachable given server: exit 3 before anything runs
            assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
            continue
        assert result.returncode == 0, result.stderr
        r = json.loads(result.stdout)
        assert r["mode"] == "falsify" and r["would_fail"] is False
        names = {c["check"] for c in r["checks"]}
        assert {"nats-server binary", "client library nats-py", "wasmtime imports"} <= names
        assert list((tmp_path / "t").iterdir()) == [] and not (tmp_path / "home").exists()
    unreachable = CliRunner().invoke(cli, ["bench", "all", "--mode=falsify", "--json"],
                                     env={"IF_BUS_URL": f"nats://127.0.0.1:{free_port()}"})
    assert unreachable.exit_code == 1
    assert [c["check"] for c in json.loads(unreachable.stdout)["checks"] if not c["ok"]] == ["bus reachable"]


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "all", "--backend", "zookeeper"],
        ["bench", "all", "--quick=yes"],
        ["bench", "all", "--n", "10"],
        ["bench", "all", "--mode=dry"],
        ["--bus", "memory://", "bench", "all", "--backend", "nats"],
        ["--bus", "bogus://x", "bench", "all"],
    ],
)
def test_bad_flags_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, env={"IF_BUS_URL": None})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_a_benchmark_that_cannot_run_is_reported_and_the_rest_still_run() -> None:
    @contextlib.contextmanager
    def broken() -> Iterator[tuple[str, dict[str, Any], bool]]:
        raise BenchError("no server today")
        yield ("", {}, False)  # pragma: no cover

    seen: list[str] = []
    plan = Plan(chassis_n=20, chassis_python=False)
    r = bench_all("memory", broken, plan=plan, only=("chassis", "waste"),
                  on_error=lambda name, exc: seen.append(name))
    assert seen == ["waste"] and r["failed"] == ["waste"]
    assert r["results"]["waste"] == {"benchmark": "waste", "error": "no server today", "type": "BenchError"}
    assert r["results"]["chassis"]["targets"]
    rows = [row for row in r["summary"] if row["benchmark"] == "waste"]
    assert len(rows) == 1 and rows[0]["pass"] is None and "no server today" in rows[0]["note"]
    with pytest.raises(ValueError, match="unknown benchmark"):
        bench_all("memory", broken, only=("disk",))


def test_summary_rows_put_ours_beside_raw() -> None:
    report = {
        "benchmark": "bus",
        "operations": {"create_win": {"ours": {"p50": 1.2}, "raw": {"p50": 1.0}, "ratio": 1.2}},
        "targets": [{"id": "create_win_ratio", "target": "t", "operation": "create_win", "metric": "ratio",
                     "compare": "<=", "threshold": 1.2, "value": 1.2, "pass": True, "applies": True,
                     "note": ""}],
    }
    [row] = summary_rows({"bus": report})
    assert (row["value"], row["ours"], row["raw"], row["unit"]) == (1.2, 1.2, 1.0, "x")
