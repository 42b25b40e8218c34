"""The seeds' migration from the command line, as real subprocesses against a
real NATS server: capabilities inferred on `board import`, STATUS files
replayed with `board import-status`, and `blocker report --cap`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infrafabric.bus.servers import NatsServer
from support import Runner, ifctl_runner

SEED = Path(__file__).parents[1] / "src/infrafabric/coordinator/data/phase0-board.md"
SAMPLES = Path(__file__).parent / "coordinator" / "samples"


@pytest.fixture
def run(nats_server: NatsServer, namespace: str, tmp_path: Path) -> Runner:
    return ifctl_runner(f"{nats_server.url}?namespace={namespace}", tmp_path)


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return json.loads(result.stdout) if result.stdout.startswith("{") else result.stdout


def test_board_import_infers_capabilities_and_says_why(run: Runner, tmp_path: Path) -> None:
    dry = ok(run("board", "import", str(SEED), "--mode=falsify", "--json"))
    inferred = dry["inferred_capabilities"]
    assert inferred["on"] is True and len(inferred["tasks"]) >= 50
    assert inferred["tasks"]["P0.1.1"][0] == {
        "capability": "code-analysis:python", "rule": "path *.py",
        "evidence": "deliverable /home/user/infrafabric/infrafabric/event_bus.py"}
    bad_map = tmp_path / "caps.yaml"
    bad_map.write_text("tasks:\n  P0.1.1: [Not A Cap]\n")
    refused = run("board", "import", str(SEED), "--caps-map", str(bad_map))
    assert refused.returncode == 2 and f"{bad_map}:2:" in refused.stderr
    assert "is not a capability" in refused.stderr
    assert json.loads(run("board", "show", "--json").stdout)["tasks"] == []  # nothing imported
    good_map = tmp_path / "good.yaml"
    good_map.write_text("tasks:\n  P0.5.5: [docs:runbooks]\n")
    done = run("board", "import", str(SEED), "--caps-map", str(good_map), "--why")
    assert done.returncode == 0, done.stderr
    assert "P0.1.1: code-analysis:python (path *.py: deliverable" in done.stdout
    assert "infra:distributed-systems (section contains 'IF.coordinator'" in done.stdout
    assert "P0.5.5: docs:runbooks (capability map:" in done.stdout
    tasks = {t["id"]: t for t in ok(run("board", "show", "--json"))["tasks"]}
    assert tasks["P0.1.1"]["capabilities"] == ["code-analysis:python", "infra:distributed-systems"]
    assert tasks["P0.3.1"]["capabilities"] == ["code-analysis:python", "wasm:runtime"]
    assert tasks["P0.5.5"]["capabilities"] == ["docs:runbooks"]
    small = tmp_path / "small.yaml"
    small.write_text("version: 1\ntasks:\n  - {id: S1, title: Setup etcd}\n"
                     "  - {id: S2, title: Setup etcd too, capabilities: [python]}\n")
    off = ok(run("board", "import", str(small), "--no-infer", "--json"))
    assert off["inferred_capabilities"]["tasks"] == {} and off["inferred_capabilities"]["on"] is False
    assert ok(run("task", "show", "S1", "--json"))["capabilities"] == []
    assert ok(run("task", "show", "S2", "--json"))["capabilities"] == ["python"]


def test_status_files_replay_completions_owners_and_progress(run: Runner) -> None:
    ok(run("board", "import", str(SEED), "--no-infer"))
    status = str(SAMPLES / "status")
    dry = run("board", "import-status", status, "--mode=falsify", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["would_fail"] is False
    assert sorted(c["task_id"] for c in planned["completed"]) == ["P0.1.1", "P0.2.3"]
    assert ok(run("task", "show", "P0.1.1", "--json"))["status"] == "available"  # falsify changed nothing
    replay = ok(run("board", "import-status", status, "--json"))
    assert {c["task_id"]: c["by"] for c in replay["completed"]} == {"P0.1.1": "session-5-cli",
                                                                     "P0.2.3": "session-2"}
    assert sorted(n["task_id"] for n in replay["progress"]) == ["P0.1.2", "P0.2.1"]
    done = ok(run("task", "show", "P0.1.1", "--json"))
    assert done["status"] == "completed" and done["owner"] == "session-5-cli"
    last = done["history"][-1]
    assert last["to"] == "completed" and last["by"] == "session-5-cli"
    assert "replayed from STATUS-SESSION-5-CLI.yaml" in last["reason"] and "tests pass" in last["reason"]
    cas = ok(run("task", "show", "P0.1.2", "--json"))
    assert cas["status"] == "available"  # its dependency P0.1.1 is completed now
    assert cas["progress"].startswith("session-7-ifbus: 50% - CAS transaction logic implemented")
    assert "progress: session-7-ifbus: 50%" in ok(run("task", "show", "P0.1.2"))
    before = ok(run("board", "show", "--json"))
    histories = {t: len(ok(run("task", "show", t, "--json"))["history"]) for t in ("P0.1.1", "P0.1.2")}
    again = ok(run("board", "import-status", status, "--json"))
    assert again["completed"] == [] and again["progress"] == []  # idempotent
    assert {u["task_id"] for u in again["unchanged"]} >= {"P0.1.1", "P0.2.3", "P0.1.2", "P0.2.1"}
    assert ok(run("board", "show", "--json")) == before
    assert {t: len(ok(run("task", "show", t, "--json"))["history"]) for t in histories} == histories


def test_a_malformed_or_unknown_status_file_changes_nothing(run: Runner, tmp_path: Path) -> None:
    ok(run("board", "import", str(SEED), "--no-infer"))
    before = ok(run("board", "show", "--json"))
    bad = run("board", "import-status", str(SAMPLES / "status"), str(SAMPLES / "status-bad"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "STATUS-SESSION-8.yaml:3: milestone: 150% is more than 100%" in bad.stderr
    assert "STATUS-SESSION-9.yaml:2: unknown key 'completd'" in bad.stderr
    unknown = tmp_path / "STATUS-SESSION-6.yaml"
    unknown.write_text("session: session-6\ncompleted: [P0.1.1, P9.9.9]\n")
    refused = run("board", "import-status", str(unknown))
    assert refused.returncode == 2
    assert "STATUS-SESSION-6.yaml:2: task P9.9.9 is not on the board" in refused.stderr
    assert ok(run("board", "show", "--json")) == before
    skipped = ok(run("board", "import-status", str(unknown), "--skip-unknown", "--json"))
    assert [c["task_id"] for c in skipped["completed"]] == ["P0.1.1"]
    assert any("P9.9.9" in w for w in skipped["warnings"])


def test_blocker_report_capabilities_given_or_extracted(run: Runner) -> None:
    ok(run("governor", "register", "helper", "--cap", "infra:distributed-systems", "--cost-per-hour", "1",
           "--budget", "9"))
    extracted = ok(run("blocker", "report", "--swarm", "stuck", "--message", "etcd is down", "--json"))
    assert extracted["capabilities"] == ["infra:distributed-systems"]
    assert extracted["capabilities_from"].startswith("extracted from the message: infra:distributed-systems "
                                                     "(keyword 'etcd'")
    assert extracted["help"]["needed_from"] == extracted["capabilities_from"]  # one rule, told to MCP too
    assert extracted["blocker_info"]["capabilities"] == ["infra:distributed-systems"]
    assert [h["swarm_id"] for h in extracted["help"]["helpers"]] == ["helper"]
    given = ok(run("blocker", "report", "--swarm", "stuck", "--message", "etcd is down",
                   "--cap", "docs:markdown", "--cap", "python", "--json"))
    assert given["capabilities"] == ["docs:markdown", "python"]
    assert given["capabilities_from"] == "given with --cap"
    assert given["help"]["needed"] == ["docs:markdown", "python"]
    bad = run("blocker", "report", "--swarm", "stuck", "--message", "m", "--cap", "Not OK")
    assert bad.returncode == 2 and "--cap 'Not OK'" in bad.stderr
