"""``ifctl bench hooks`` measures the hook and guard processes on a real bus
and reports (never asserts) their targets; its JSON has every figure the
README cites."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infrafabric.bus.servers import NatsServer

pytestmark = [pytest.mark.engine, pytest.mark.timeout(300)]


def test_bench_hooks_reports_both_paths_beside_the_floor(nats_server: NatsServer) -> None:
    ifctl = str(Path(sys.executable).parent / "ifctl")
    done = subprocess.run([ifctl, "--bus", f"{nats_server.url}?namespace=benchhooks", "bench", "hooks",
                           "--n", "3", "--tasks", "5", "--json"], capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["benchmark"] == "hooks" and result["backend"] == "nats"
    (run,) = result["runs"]
    assert run["tasks"] == 5
    for path in ("server", "direct"):
        for event in ("post-tool-use", "stop", "guard-refuse", "guard-allow"):
            stats = run[path][event]
            assert stats["count"] >= 3 and 0 < stats["p50"] <= stats["p95"]
    assert run["raw_heartbeat"]["count"] == 3 and result["process_floor"]["p50"] > 0
    assert run["pre_commit"]["count"] == 3 and run["leases_held"] == 5  # T0 and four of the other swarm's
    assert {t["id"] for t in result["targets"]} == {"hook-post-tool-use", "hook-stop", "guard-refuse",
                                                    "guard-allow", "guard-pre-commit"}
    assert all(t["threshold"] == (1000.0 if t["id"] == "guard-pre-commit" else 100.0)
               and t["pass"] in (True, False) for t in result["targets"])


def test_bench_startup_times_each_command_beside_the_floor_and_the_warm_work(nats_server: NatsServer) -> None:
    ifctl = str(Path(sys.executable).parent / "ifctl")
    done = subprocess.run([ifctl, "--bus", f"{nats_server.url}?namespace=benchstartup", "bench", "startup",
                           "--n", "3", "--json"], capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["benchmark"] == "startup" and result["backend"] == "nats"
    ops = result["operations"]
    assert set(ops) == {"python", "help", "heartbeat_library", "heartbeat_warm", "heartbeat_first",
                        "heartbeat", "heartbeat_server", "hook_post-tool-use", "hook_stop"}
    assert ops.pop("heartbeat_first")["count"] == 1  # the one call that leaves the connection behind
    assert all(st["count"] == 3 and 0 < st["p50"] <= st["p95"] for st in ops.values())
    # the start-up is the process less the same work done warm, and that work is not free
    beat, warm = ops["heartbeat_library"]["p50"], ops["heartbeat_warm"]["p50"]
    assert result["heartbeat_startup"]["p50"] == round(beat - warm, 3)
    assert ops["heartbeat_warm"]["p50"] > 0
    assert {t["id"]: t["threshold"] for t in result["targets"]} == {
        "help": 150.0, "heartbeat": 150.0, "heartbeat-server": 150.0, "hook-post-tool-use": 150.0,
        "hook-stop": 150.0}
    assert all(t["pass"] in (True, False) for t in result["targets"])
    human = subprocess.run([ifctl, "bench", "startup", "--help"], capture_output=True, text=True, timeout=60)
    assert "start-up" in human.stdout and "--n" in human.stdout
