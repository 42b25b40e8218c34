"""The governor's and the cost ledger's CLI as real subprocesses against a real NATS server."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infrafabric.bus.servers import NatsServer, free_port

IFCTL = str(Path(sys.executable).with_name("ifctl"))
Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def ifenv(nats_server: NatsServer, namespace: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "IF_BUS_URL": f"{nats_server.url}?namespace={namespace}",
            "IF_HOME": str(tmp_path / "home"), "USER": "alice"}


@pytest.fixture
def run(ifenv: dict[str, str], tmp_path: Path) -> Runner:
    env = ifenv

    def ifctl(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([IFCTL, *args], capture_output=True, text=True, env={**env, **extra},
                              timeout=60, cwd=tmp_path)

    return ifctl


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def register_fleet(run: Runner) -> None:
    ok(run("governor", "register", "sip", "--cap", "integration:sip", "--cap", "code-analysis:python",
           "--cost-per-hour", "2", "--reputation", "0.9", "--model", "haiku", "--budget", "1.00"))
    ok(run("governor", "register", "sip-pricey", "--cap", "integration:sip", "--cap", "code-analysis:python",
           "--cost-per-hour", "8", "--model", "sonnet", "--budget", "50"))
    ok(run("governor", "register", "rust", "--cap", "code-analysis:rust", "--cost-per-hour", "1",
           "--budget", "10"))


def test_register_status_and_match_with_why(run: Runner, tmp_path: Path) -> None:
    dry = run("governor", "register", "sip", "--cap", "integration:sip", "--cost-per-hour", "2",
              "--mode=falsify", "--json")
    assert ok(dry) and as_json(dry)["would_fail"] is False
    assert as_json(ok(run("governor", "status", "--json")))["swarms"] == []  # falsify wrote nothing

    first = run("governor", "register", "sip", "--cap", "integration:sip", "--cap", "code-analysis:python",
                "--cost-per-hour", "2", "--reputation", "0.9", "--model", "haiku", "--budget", "1.00",
                "--json", "--trace")
    report = as_json(ok(first))
    assert report["budget"]["limit_micros"] == 1_000_000 and report["cost_per_hour_usd"] == "2.00"
    # one registration (profile and board record in one step), one entry for it
    assert sorted((e["component"], e["operation"]) for e in report["witness_entries"]) == [
        ("IF.governor", "budget_set"), ("IF.governor", "swarm_registered")]

    manifest = tmp_path / "pricey.json"
    manifest.write_text(json.dumps({"id": "sip-pricey", "capabilities": ["integration:sip",
                                                                          "code-analysis:python"],
                                    "cost_per_hour": 8.0, "model": "sonnet", "budget": "50"}))
    ok(run("governor", "register", "--manifest", str(manifest)))
    ok(run("governor", "register", "rust", "--cap", "code-analysis:rust", "--cost-per-hour", "1",
           "--budget", "10"))
    # the coordinator knows them too (registration goes through to the board)
    assert {s["id"] for s in as_json(ok(run("swarm", "list", "--json")))["swarms"]} == {
        "sip", "sip-pricey", "rust"}

    status = as_json(ok(run("governor", "status", "--json")))
    by_id = {s["id"]: s for s in status["swarms"]}
    assert set(by_id) == {"sip", "sip-pricey", "rust"}
    assert by_id["sip-pricey"]["budget"]["remaining_usd"] == "50.00"
    assert by_id["sip"]["breaker"]["state"] == "closed" and by_id["sip"]["refused"] is None
    assert "sip" in ok(run("governor", "status", "sip")).stdout

    match = run("governor", "match", "integration:sip", "code-analysis:python", "--why")
    assert ok(match).stdout.startswith("sip (coverage 100%")
    assert "sip-pricey: coverage 100%" in match.stdout and "qualified, lower score" in match.stdout
    assert "rust: coverage 0%" in match.stdout and "excluded: coverage 0% below 70%" in match.stdout

    capped = as_json(ok(run("governor", "match", "integration:sip", "--max-cost", "2.50", "--json", "--why")))
    assert capped["chosen"] == "sip" and capped["max_cost_per_hour_usd"] == "2.50"
    reasons = {c["swarm_id"]: c["excluded"] for c in capped["candidates"]}
    assert reasons["sip-pricey"] == "costs $8.00/h, more than $2.50/h" and reasons["sip"] is None
    nobody = run("governor", "match", "integration:sip", "--max-cost", "1.50", "--why")
    assert nobody.returncode == 1 and "no qualified swarm" in nobody.stdout
    assert "more than $1.50/h" in nobody.stdout
    assert run("governor", "match", "wasm:runtime").returncode == 1


def test_cost_track_trips_the_breaker_and_reset_restores(run: Runner) -> None:
    register_fleet(run)
    first = as_json(ok(run("cost", "track", "sip", "review", "0.60", "--task", "P0.2.1", "--model", "haiku",
                           "--json")))
    assert first["remaining_micros"] == 400_000 and first["tripped"] is False
    would = run("cost", "track", "sip", "tests", "0.50", "--mode=falsify", "--json")
    assert would.returncode == 1 and as_json(would)["would_fail"] is True
    assert "the breaker would open" in " ".join(as_json(would)["problems"])
    assert as_json(ok(run("cost", "budget", "--json")))["swarms"][1]["budget"]["spent_micros"] == 600_000

    # exactly $0 left: allowed, nothing trips
    ok(run("cost", "track", "sip", "review", "0.40", "--task", "P0.2.2", "--model", "haiku"))
    tripped = run("cost", "track", "sip", "tests", "0.25", "--trace")
    assert tripped.returncode == 1, tripped.stdout + tripped.stderr
    assert "circuit breaker OPEN for sip" in tripped.stdout and "reset-circuit-breaker sip" in tripped.stdout
    assert "circuit_breaker_tripped" in tripped.stdout  # witnessed
    # the governor logs it (infrafabric.governor.core); ifctl shows the library's warnings on stderr
    assert "warning: circuit breaker OPEN for sip: budget exhausted" in tripped.stderr
    again = run("cost", "track", "sip", "tests", "0.25")
    assert again.returncode == 1 and "already open" in again.stdout

    # a tripped swarm is refused: no match, status says why
    refused = run("governor", "match", "integration:sip", "code-analysis:python", "--why")
    assert refused.returncode == 0 and refused.stdout.startswith("sip-pricey")
    assert "sip: coverage 100%" in refused.stdout and "excluded: circuit breaker open: budget exhausted" \
        in refused.stdout
    sip = as_json(ok(run("governor", "status", "sip", "--json")))["swarms"][0]
    assert sip["breaker"]["state"] == "open" and "budget exhausted" in sip["breaker"]["reason"]
    assert sip["refused"].startswith("circuit breaker open") and sip["budget"]["remaining_micros"] == -500_000

    dry = run("governor", "reset-circuit-breaker", "sip", "--budget", "5", "--mode=falsify", "--json")
    assert ok(dry) and as_json(dry)["would_fail"] is False
    assert as_json(ok(run("governor", "status", "sip", "--json")))["swarms"][0]["breaker"]["state"] == "open"

    reset = as_json(ok(run("governor", "reset-circuit-breaker", "sip", "--budget", "5", "--json", "--trace")))
    assert reset["breaker"]["state"] == "closed" and reset["breaker"]["changed_by"] == "alice"  # $USER
    assert reset["budget"]["remaining_micros"] == 5_000_000 and reset["was"]["state"] == "open"
    assert any(e["operation"] == "circuit_breaker_reset" and e["params"]["by"] == "alice"
               for e in reset["witness_entries"])
    assert ok(run("governor", "match", "integration:sip", "code-analysis:python")).stdout.startswith("sip ")

    # manual trip and a reset by a named person
    trip = run("governor", "trip", "sip", "--reason", "looping on one error", "--json")
    assert as_json(ok(trip))["opened"] is True and as_json(trip)["breaker"]["changed_by"] == "alice"
    assert "warning: circuit breaker OPEN for sip: manual: looping on one error\n" in trip.stderr  # once,
    assert trip.stderr.count("circuit breaker OPEN") == 1  # and on stderr: stdout is the JSON above
    twice = ok(run("governor", "trip", "sip", "--reason", "again"))
    assert "already open" in twice.stdout and "circuit breaker OPEN" not in twice.stderr
    status = ok(run("governor", "status", "sip")).stdout
    assert "OPEN" in status and "manual: looping on one error" in status
    by_bob = as_json(ok(run("governor", "reset-circuit-breaker", "sip", "--by", "bob", "--json")))
    assert by_bob["breaker"]["changed_by"] == "bob" and by_bob["budget"]["remaining_micros"] == 5_000_000


def test_cost_report_budget_history_csv_and_optimise_alias(run: Runner, tmp_path: Path) -> None:
    register_fleet(run)
    for args in (("sip", "review", "0.10", "--task", "T1", "--model", "haiku"),
                 ("sip", "review", "0.20", "--task", "T2", "--model", "haiku"),
                 ("sip-pricey", "build", "1.000001", "--task", "T1", "--model", "sonnet"),
                 ("rust", "review", "0.000001")):
        ok(run("cost", "track", *args))

    report = as_json(ok(run("cost", "report", "--json")))
    assert report["total_micros"] == 300_000 + 1_000_001 + 1 and report["entries"] == 4
    assert {r["swarm"]: r["cost_micros"] for r in report["rows"]} == {
        "sip": 300_000, "sip-pricey": 1_000_001, "rust": 1}

    by_op = tmp_path / "by-op.csv"
    ok(run("cost", "report", "--by", "operation", "--csv", str(by_op)))
    rows = read_csv(by_op)
    assert [r["operation"] for r in rows] == ["build", "review"]
    assert {r["operation"]: r["cost_usd"] for r in rows} == {"build": "1.000001", "review": "0.300001"}
    by_task = as_json(ok(run("cost", "report", "--by", "task", "--json")))
    assert {r["task"]: r["cost_usd"] for r in by_task["rows"]} == {
        "T1": "1.100001", "T2": "0.20", None: "0.000001"}

    budgets = tmp_path / "budgets.csv"
    ok(run("optimise", "budget", "--csv", str(budgets)))  # the alias is the same group
    got = {r["swarm_id"]: r for r in read_csv(budgets)}
    assert list(read_csv(budgets)[0]) == ["swarm_id", "limit_usd", "spent_usd", "reserved_usd",
                                          "remaining_usd", "breaker", "breaker_reason"]
    assert got["sip"]["limit_usd"] == "1.00" and got["sip"]["spent_usd"] == "0.30"
    assert got["sip"]["remaining_usd"] == "0.70" and got["sip-pricey"]["remaining_usd"] == "48.999999"
    assert got["rust"]["breaker"] == "closed"

    history = tmp_path / "history.csv"
    ok(run("cost", "history", "--swarm", "sip", "--since", "1h", "--csv", str(history)))
    entries = read_csv(history)
    assert [(e["operation"], e["cost_usd"], e["task_id"], e["running_total_usd"]) for e in entries] == [
        ("review", "0.10", "T1", "0.10"), ("review", "0.20", "T2", "0.30")]
    assert entries[1]["remaining_usd"] == "0.70" and entries[0]["at"].endswith("+00:00")
    assert as_json(ok(run("cost", "history", "--operation", "review", "--json")))["count"] == 3
    assert as_json(ok(run("cost", "history", "--until", "2000-01-01", "--json")))["count"] == 0
    stdout_csv = ok(run("optimise", "history", "--csv", "-")).stdout
    assert stdout_csv.splitlines()[0].startswith("at,swarm_id,operation,cost_usd")
    assert len(list(csv.DictReader(io.StringIO(stdout_csv)))) == 4

    # falsify writes no file
    skipped = tmp_path / "not-written.csv"
    assert ok(run("cost", "report", "--csv", str(skipped), "--mode=falsify")).returncode == 0
    assert not skipped.exists()
    unwritable = str(tmp_path / "no-dir" / "x.csv")
    assert run("cost", "report", "--csv", unwritable, "--mode=falsify").returncode == 1


def test_policy_show_validate_and_set(run: Runner, tmp_path: Path) -> None:
    shown = as_json(ok(run("governor", "policy", "--json")))
    assert shown["source"] == "default" and shown["policy"]["min_capability_match"] == "0.7"
    good = tmp_path / "policy.yaml"
    good.write_text("resource_policy:\n  max_swarms_per_task: 2\n  max_cost_per_task: 2.50\n"
                    "  min_capability_match: 0.5\n")
    dry = as_json(ok(run("governor", "policy", str(good), "--mode=falsify", "--json")))
    assert dry["would_fail"] is False and "min_capability_match: 0.7 -> 0.5" in dry["changes"]
    assert as_json(ok(run("governor", "policy", "--json")))["source"] == "default"  # unchanged
    ok(run("governor", "policy", str(good)))
    now = as_json(ok(run("governor", "policy", "--json")))
    assert now["source"] == "bus" and now["policy"]["max_cost_per_task"] == "2.50"

    # the policy's threshold is what match applies
    ok(run("governor", "register", "half", "--cap", "integration:sip", "--cost-per-hour", "1",
           "--budget", "1"))
    assert ok(run("governor", "match", "integration:sip", "code-analysis:python")).stdout.startswith("half ")

    bad = tmp_path / "bad.yaml"
    bad.write_text("resource_policy:\n  max_swarms_per_task: 2\n  max_swarms: 3\n"
                   "  min_capability_match: high\n")
    for args in ((str(bad),), (str(bad), "--mode=falsify")):
        refused = run("governor", "policy", *args)
        assert refused.returncode == 2
        assert "bad.yaml:3: resource_policy.max_swarms: unknown key" in refused.stderr
        assert "bad.yaml:4: resource_policy.min_capability_match: must be a number" in refused.stderr
        assert "Traceback" not in refused.stderr
    missing = run("governor", "policy", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml: no such policy file" in missing.stderr
    assert as_json(ok(run("governor", "policy", "--json")))["policy"]["max_swarms_per_task"] == 2


@pytest.mark.parametrize(("args", "says"), [
    (("governor", "register", "x", "--cap", "Python", "--cost-per-hour", "1"),
     "capabilities: item 0 ('Python')"),
    (("governor", "register", "x", "--cap", "a:b"), "cost_per_hour: required field is missing"),
    (("governor", "register", "x", "--cap", "a:b", "--cost-per-hour", "1", "--reputation", "2"),
     "reputation: must be at most 1"),
    (("governor", "register", "x", "--cap", "a:b", "--cost-per-hour", "1.0000001"), "more than 6 decimals"),
    (("governor", "register", "--manifest", "nope.json"), "nope.json: no such manifest file"),
    (("governor", "register"), "give SWARM or --manifest FILE"),
    (("governor", "match", "Not A Cap"), "invalid capability 'Not A Cap'"),
    (("governor", "match", "a:b", "--max-cost", "free"), "--max-cost 'free' is not a number of dollars"),
    (("governor", "status", "ghost"), "no swarm 'ghost' is registered"),
    (("governor", "reset-circuit-breaker", "ghost"), "no swarm 'ghost' is registered"),
    (("governor", "reset-circuit-breaker", "ghost", "--budget", "-5"), "--budget '-5' must be at least $0"),
    (("governor", "trip", "ghost"), "Missing option '--reason'"),
    (("governor", "trip", "ghost", "--reason", " "), "--reason must not be empty"),
    (("governor", "frobnicate"), "No such command 'frobnicate'"),
    (("cost", "track", "ghost", "review", "1"), "swarm 'ghost' has no budget"),
    (("cost", "track", "ghost", "review", "a lot"), "USD 'a lot' is not a number of dollars"),
    (("cost", "track", "ghost", "review", "1", "--task", "bad task"), "--task 'bad task' is not a task id"),
    (("cost", "report", "--by", "colour"), "Invalid value for '--by'"),
    (("cost", "history", "--since", "last tuesday"), "--since 'last tuesday' is not a time"),
    (("cost", "history", "--since", "1h", "--until", "2h"), "is after --until"),
    (("optimise", "budget", "--mode", "sideways"), "sideways"),
    (("cost", "budget", "--bogus"), "No such option '--bogus'"),
])
def test_bad_input_exits_2_naming_what_is_wrong(run: Runner, args: tuple[str, ...], says: str) -> None:
    result = run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_bus_exits_3(run: Runner) -> None:
    down = f"nats://127.0.0.1:{free_port()}"
    for args in (("governor", "status"), ("cost", "report"), ("cost", "track", "s", "op", "1")):
        result = run(*args, IF_BUS_URL=down)
        assert result.returncode == 3, (args, result.stderr)
        assert "cannot connect to the bus" in result.stderr and "Traceback" not in result.stderr



def test_status_tells_live_swarms_from_dead_ones_and_names_unattended_work(
        run: Runner, ifenv: dict[str, str], tmp_path: Path) -> None:
    register_fleet(run)
    ok(run("task", "create", "R1", "--title", "borrow checker", "--cap", "code-analysis:rust"))
    ok(run("task", "create", "S1", "--title", "sip trunk", "--cap", "integration:sip"))
    ok(run("task", "claim", "S1", "--swarm", "sip-pricey", "--lease", "600"))  # holds a live claim
    status = as_json(ok(run("governor", "status", "--json")))
    live = {s["id"]: s["live"] for s in status["swarms"]}
    assert live["sip-pricey"]["live"] and live["sip-pricey"]["because"] == ["holds S1"]
    assert not live["sip"]["live"] and live["sip"]["last_seen"] is None
    assert status["unattended"] == ["R1"]  # only rust covers it, and no agent of rust is live

    # rust's agent connects (an MCP session) and sip's waits for work: both live
    connected = subprocess.Popen([IFCTL, "mcp"], env={**ifenv, "IF_SWARM_ID": "rust"}, cwd=tmp_path,
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    waiting = subprocess.Popen([IFCTL, "task", "next", "--swarm", "sip", "--wait", "120"], env=ifenv,
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            status = as_json(ok(run("governor", "status", "--json")))
            live = {s["id"]: s["live"] for s in status["swarms"]}
            if live["rust"]["live"] and live["sip"]["live"]:
                break
        assert live["rust"]["because"][0].startswith("connected via mcp")
        assert live["sip"]["because"][0].startswith("waiting for work via next_task")
        assert status["unattended"] == []
        text = ok(run("governor", "status")).stdout
        assert "3 of 3 swarms can take work now" in text and "live" in text
    finally:
        assert connected.stdin is not None
        connected.stdin.close()  # a session that ends removes its mark
        assert connected.wait(timeout=30) == 0
        waiting.kill()  # (a mark a dead process leaves goes stale after its ttl: tests/coordinator)
        waiting.wait(timeout=30)
    status = as_json(ok(run("governor", "status", "--json")))
    assert not {s["id"]: s["live"] for s in status["swarms"]}["rust"]["live"]
    assert status["unattended"] == ["R1"]
    text = ok(run("governor", "status", "rust")).stdout
    assert "dead: no agent connected, waiting or holding a claim" in text
