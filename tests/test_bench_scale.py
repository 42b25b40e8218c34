"""``ifctl bench scale`` imports and hands out through the governed, witnessed
fleet at each board size, beside the bus's own compare-and-swap, and reports
(never asserts) the [5/9] targets; its JSON has every figure it prints."""

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
                           "--quick", "--n", "5", "--tasks", "20", "--tasks", "60", "--json"],
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["benchmark"] == "scale" and result["backend"] == "nats"
    assert [r["tasks"] for r in result["runs"]] == [20, 60]
    for run in result["runs"]:
        assert run["import_per_s"] > 0 and run["next_task"]["count"] == 5 and run["bus_cas"]["count"] == 5
        assert 0 < run["next_task"]["p50"] <= run["next_task"]["p99"]
    assert {t["id"] for t in result["targets"]} == {"flat", "vs-cas", "p99", "import"}
    assert all(t["pass"] in (True, False) for t in result["targets"])
