"""The issue's problems, re-run as a user runs them: ``ifctl`` processes on a
real NATS or etcd server (each command its own process, as in a shell loop)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from infrafabric.bus import connect
from infrafabric.bus.layout import push_subject
from infrafabric.coordinator import IFCoordinator

IFCTL = str(Path(sys.executable).with_name("ifctl"))
Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(engine_url: str, tmp_path: Path) -> Runner:
    env = {**os.environ, "IF_BUS_URL": engine_url, "IF_HOME": str(tmp_path / "home"), "USER": "alice"}

    def ifctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([IFCTL, *args], capture_output=True, text=True, env=env, timeout=90)

    return ifctl


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_heartbeat_keeps_the_lease_the_task_was_claimed_with(run: Runner) -> None:
    ok(run("swarm", "register", "s1", "--cap", "docs:markdown"))
    ok(run("task", "create", "T", "--title", "t", "--cap", "docs:markdown"))
    claim = json.loads(ok(run("task", "next", "--swarm", "s1", "--lease", "60", "--json")).stdout)
    assert claim["won"] and claim["task"]["lease_ttl"] == 60
    beat = json.loads(ok(run("task", "heartbeat", "T", "--swarm", "s1", "--claim", claim["claim_id"],
                             "--json")).stdout)
    assert beat["lease_left_s"] > 55  # was 15 s: the CLI's default lease, not the claim's
    longer = json.loads(ok(run("task", "heartbeat", "T", "--swarm", "s1", "--lease", "300",
                               "--json")).stdout)
    assert longer["lease_left_s"] > 295
    again = json.loads(ok(run("task", "heartbeat", "T", "--swarm", "s1", "--json")).stdout)
    assert again["lease_left_s"] > 295
    bad = run("task", "heartbeat", "T", "--swarm", "s1", "--lease", "0")
    assert bad.returncode == 2 and "--lease" in bad.stderr


def test_task_next_says_why_the_hand_is_empty(run: Runner) -> None:
    ok(run("governor", "register", "s1", "--cap", "docs:markdown", "--cost-per-hour", "1", "--budget", "5"))
    ok(run("swarm", "register", "rival", "--cap", "docs:markdown"))
    nothing = run("task", "next", "--swarm", "s1", "--json")
    assert nothing.returncode == 1 and json.loads(nothing.stdout)["reason"] == "no_covered_task"
    ok(run("task", "create", "A", "--title", "a", "--cap", "docs:markdown"))
    ok(run("task", "create", "B", "--title", "b", "--cap", "docs:markdown", "--dep", "A"))
    ok(run("task", "claim", "A", "--swarm", "rival"))
    busy = run("task", "next", "--swarm", "s1", "--why")
    assert busy.returncode == 1, busy.stdout + busy.stderr
    assert "A: claimed by rival" in busy.stdout and "B: blocked by A" in busy.stdout
    assert "bus: IF_BUS_URL" in busy.stdout
    ok(run("governor", "trip", "s1", "--reason", "looping on the same error"))
    stopped = run("task", "next", "--swarm", "s1", "--wait", "30", "--why")
    assert stopped.returncode == 4, stopped.stdout + stopped.stderr  # at once, not after 30 s
    assert "circuit breaker of s1 is open: manual: looping on the same error" in stopped.stdout
    assert "ifctl governor reset-circuit-breaker s1 --budget USD" in stopped.stdout
    data = json.loads(run("task", "next", "--swarm", "s1", "--json").stdout)
    assert data["stopped"] and data["reason"] == "breaker_open" and data["exit_code"] == 4
    assert data["hint"] == "ifctl governor reset-circuit-breaker s1 --budget USD"
    claim = run("task", "claim", "B", "--swarm", "s1")  # the same exit as task next: stop the loop
    assert claim.returncode == 4 and "to resume: ifctl governor reset-circuit-breaker s1" in claim.stdout


def test_import_keeps_done_work_and_reports_board_owners(run: Runner, tmp_path: Path) -> None:
    board = tmp_path / "board.md"
    board.write_text(
        "| ID | Task | Status | Owner | Dependencies |\n"
        "|----|------|--------|-------|--------------|\n"
        "| P1 | done already | 🟢 COMPLETED | session-3 | - |\n"
        "| P2 | next | 🔵 AVAILABLE | - | P1 |\n"
        "| P3 | in flight | 🟡 CLAIMED | session-7 | P1 |\n"
        "| P4 | later | 🔴 BLOCKED | - | P2, P3 |\n")
    imported = json.loads(ok(run("board", "import", str(board), "--json")).stdout)
    assert imported["by_status"] == {"completed": 1, "available": 2, "blocked": 1}
    assert imported["completed_on_board"] == ["P1"] and imported["claimed_on_board"] == {"P3": "session-7"}
    assert any("P3 is CLAIMED by session-7" in n for n in imported["notes"])
    human = run("board", "import", str(board), "--mode=falsify")
    assert "P3 is CLAIMED by session-7" in human.stdout
    tasks = {t["id"]: t for t in json.loads(ok(run("board", "show", "--json")).stdout)["tasks"]}
    assert tasks["P1"]["status"] == "completed" and tasks["P2"]["status"] == "available"
    ok(run("swarm", "register", "s1"))
    first = json.loads(ok(run("task", "next", "--swarm", "s1", "--json")).stdout)
    assert first["task_id"] in ("P2", "P3")  # P1 is never handed out again


def test_a_cli_reopen_is_never_pushed_to_a_tripped_swarm(run: Runner, engine_url: str) -> None:
    ok(run("governor", "register", "ok", "--cap", "docs:markdown", "--cost-per-hour", "1", "--budget", "9"))
    ok(run("governor", "register", "tripped", "--cap", "docs:markdown", "--cost-per-hour", "1",
           "--budget", "9"))
    ok(run("task", "create", "F", "--title", "fails", "--cap", "docs:markdown"))
    for _ in range(3):
        claim = json.loads(ok(run("task", "claim", "F", "--swarm", "ok", "--json")).stdout)
        ok(run("task", "fail", "F", "--swarm", "ok", "--claim", claim["claim_id"], "--error", "red"))
        ok(run("governor", "reset-circuit-breaker", "ok", "--by", "alice"))  # the failures are not its fault
    ok(run("governor", "trip", "tripped", "--reason", "testing"))

    async def watch() -> tuple[str, str]:
        async with connect(engine_url) as bus:
            coord = IFCoordinator(bus)
            async with coord.pushed_tasks("ok") as good, coord.pushed_tasks("tripped") as bad:
                reopened = await asyncio.to_thread(run, "task", "reopen", "F", "--reason", "fixed")
                assert reopened.returncode == 0, reopened.stderr
                pushed = (await good.get(15)).id
                await bus.publish(push_subject("tripped"), json.dumps({"id": "sentinel", "title": "s"}))
                return pushed, (await bad.get(15)).id

    assert asyncio.run(watch()) == ("F", "sentinel")
    lines = ok(run("witness", "query", "--operation", "task_reopened", "--json")).stdout.splitlines()
    assert [(e["actor"], e["severity"]) for e in map(json.loads, lines)] == [("alice", "notice")]
