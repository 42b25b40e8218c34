"""``ifctl bench scale`` imports and hands out through the governed, witnessed
fleet at each board size (one-shot and long-lived), beside the bus's and the
engine's own compare-and-swap, times create→first claim with agents waiting,
drains a board with agents in several processes, and reports (never asserts)
the [5/9] targets; its JSON has every figure it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infrafabric.bus.servers import NatsServer

pytestmark = [pytest.mark.engine, pytest.mark.timeout(300)]


def test_bench_scale_reports_every_size_and_target(nats_server: NatsServer) -> None:
    ifctl = str(Path(sys.executable).parent / "ifctl")
    done = subprocess.run([ifctl, "--bus", f"{nats_server.url}?namespace=benchscale", "bench", "scale",
                           "--quick", "--n", "5", "--tasks", "20", "--tasks", "60", "--agents", "2",
                           "--agents", "5", "--rounds", "2", "--drain-agents", "6", "--drain-tasks", "30",
                           "--processes", "2", "--json"],
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["benchmark"] == "scale" and result["backend"] == "nats"
    assert [r["tasks"] for r in result["runs"]] == [20, 60]
    for run in result["runs"]:
        assert run["import_per_s"] > 0 and run["next_task"]["count"] == 5
        assert run["next_task_long_lived"]["count"] == 5
        assert run["bus_cas"]["count"] == run["raw_cas"]["count"] == 10  # beside each hand-out, both ways
        assert 0 < run["next_task"]["p50"] <= run["next_task"]["p99"]
    assert result["raw"]["cas"]["count"] >= 5 and result["raw"]["creates_per_s"] > 0
    assert [w["agents"] for w in result["wakeups"]] == [2, 5]
    for w in result["wakeups"]:
        assert w["create_to_claim"]["count"] == 2 and 1 <= w["pushes_per_task"]["max"] <= 3
        assert w["first_create_to_claim_ms"] > 0  # the board's first task, timed apart
    drain = result["drain"]
    assert drain["processes"] == 2 and drain["distinct"] == 30 and drain["duplicates"] == 0
    assert drain["left_undone"] == 0 and drain["agent_errors"] == 0
    assert {t["id"] for t in result["targets"]} == {"flat", "vs-cas", "p99", "vs-cas-served", "p99-served",
                                                    "import", "wakeup", "duplicates"}
    notes = {t["id"]: t["note"] for t in result["targets"]}
    floor = result["runs"][-1]["raw_cas"]["p99"]
    assert notes["p99"] == notes["p99-served"] == f"raw CAS p99 in the same run: {floor} ms"
    assert result["gc"]["threshold"][0] == 10_000 and result["gc"]["frozen"] > 0  # run as a server runs
    assert all(t["pass"] in (True, False) for t in result["targets"])
    vs_raw = next(t for t in result["targets"] if t["id"] == "vs-cas-served")
    assert "raw CAS" in vs_raw["target"]  # the floor: the engine's own client
