"""The coordinator's CLI as real subprocesses against a real NATS server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infrafabric.bus.servers import NatsServer
from support import Runner, ifctl_runner

SEED = Path(__file__).parents[1] / "src/infrafabric/coordinator/data/phase0-board.md"


@pytest.fixture
def run(nats_server: NatsServer, namespace: str, tmp_path: Path) -> Runner:
    return ifctl_runner(f"{nats_server.url}?namespace={namespace}", tmp_path)


def test_seed_board_imports_with_derived_status(run: Runner) -> None:
    imported = run("board", "import", str(SEED), "--json")
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert report["imported"] == 54
    assert any("P0.1.2 is marked AVAILABLE" in w for w in report["warnings"])
    board = json.loads(run("board", "show", "--json").stdout)
    tasks = {t["id"]: t for t in board["tasks"]}
    assert len(tasks) == 54
    assert tasks["P0.1.2"]["status"] == "blocked"  # the seed says AVAILABLE; its dependency is open
    assert tasks["P0.1.1"]["status"] == "available"
    assert tasks["P0.1.5"]["dependencies"] == ["P0.1.1", "P0.1.2", "P0.1.3", "P0.1.4"]
    assert sum(t["kind"] == "filler" for t in tasks.values()) == 28
    again = run("board", "import", str(SEED))
    assert again.returncode == 2 and "54 of its tasks already exist" in again.stderr
    exported = run("board", "export", "--format", "md")
    assert exported.returncode == 0 and "| P0.1.5 |" in exported.stdout


def test_bad_board_names_the_line_and_writes_nothing(run: Runner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.md"
    bad.write_text("| ID | Task | Dependencies |\n|----|------|----|\n| A | a | B |\n| B | b | A |\n")
    result = run("board", "import", str(bad))
    assert result.returncode == 2
    assert "bad.md:" in result.stderr and "A -> B -> A" in result.stderr.replace("B -> A -> B", "A -> B -> A")
    assert "Traceback" not in result.stderr
    assert json.loads(run("board", "show", "--json").stdout)["tasks"] == []
    missing = run("board", "import", str(tmp_path / "nope.md"))
    assert missing.returncode == 2 and "nope.md" in missing.stderr


def test_task_commands_and_exit_codes(run: Runner) -> None:
    assert run("swarm", "register", "s1", "--cap", "python").returncode == 0
    assert run("swarm", "register", "s2", "--cap", "python").returncode == 0
    assert run("task", "create", "A", "--title", "first", "--cap", "python").returncode == 0
    assert run("task", "create", "B", "--title", "second", "--dep", "A").returncode == 0
    blocked = run("task", "claim", "B", "--swarm", "s1", "--why")
    assert blocked.returncode == 1 and "waiting on dependencies: A" in blocked.stdout
    dry = run("task", "claim", "A", "--swarm", "s1", "--mode=falsify", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["would_fail"] is False
    assert json.loads(run("task", "show", "A", "--json").stdout)["status"] == "available"
    won = run("task", "claim", "A", "--swarm", "s1", "--json")
    assert won.returncode == 0, won.stderr
    claim_id = json.loads(won.stdout)["claim_id"]
    lost = run("task", "claim", "A", "--swarm", "s2")
    assert lost.returncode == 1 and "claimed by s1" in lost.stdout
    assert run("task", "complete", "A", "--swarm", "s2").returncode == 1  # not the owner
    assert run("task", "heartbeat", "A", "--swarm", "s1", "--claim", claim_id).returncode == 0
    done = run("task", "complete", "A", "--swarm", "s1", "--claim", claim_id, "--result", '{"ok": true}')
    assert done.returncode == 0, done.stderr
    nxt = run("task", "next", "--swarm", "s2", "--json")
    assert nxt.returncode == 0 and json.loads(nxt.stdout)["task_id"] == "B"
    none_left = run("task", "next", "--swarm", "s1")
    assert none_left.returncode == 1 and "no task for s1" in none_left.stdout
    unknown = run("task", "show", "ZZZ")
    assert unknown.returncode == 2 and "no task 'ZZZ'" in unknown.stderr
    bad_id = run("task", "create", "has space", "--title", "x")
    assert bad_id.returncode == 2 and "id" in bad_id.stderr and "Traceback" not in bad_id.stderr
    events = run("events", "watch", "--from-revision", "1", "--count", "3", "--json")
    assert events.returncode == 0
    assert [json.loads(line)["status"] for line in events.stdout.splitlines()] == [
        "available", "blocked", "claimed"]


def test_swarm_spawn_detects_capabilities_and_sets_a_budget(run: Runner, tmp_path: Path) -> None:
    code = tmp_path / "agent"
    (code / "src").mkdir(parents=True)
    (code / "pyproject.toml").write_text("[project]\nname='a'\n")
    (code / "src" / "lib.rs").write_text("")
    spawned = run("swarm", "spawn", "s7", "--path", str(code), "--cap", "docs:markdown",
                  "--budget", "25", "--json")
    assert spawned.returncode == 0, spawned.stderr
    report = json.loads(spawned.stdout)
    assert report["capabilities"] == ["code-analysis:python", "code-analysis:rust", "docs:markdown"]
    assert report["budget_micros"] == 25_000_000 and report["detected"]["code-analysis:rust"] == "src/lib.rs"
    listed = json.loads(run("swarm", "list", "--json").stdout)["swarms"]
    assert [s["id"] for s in listed] == ["s7"]
    bad = run("swarm", "spawn", "s8", "--path", str(code), "--budget", "lots")
    assert bad.returncode == 2 and "--budget" in bad.stderr
