"""Board formats people already use: gh-issues, taskmaster, backlog, speckit.

Each sample under ``samples/`` is imported (dependencies, statuses,
capabilities), exported, and the export imported again to the same task
specs. Malformed samples give one BoardError naming the file, the line or
field and the problem. Pure parsing; the CLI tests at the end use a real
nats-server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infrafabric.bus.servers import NatsServer
from infrafabric.coordinator import formats
from infrafabric.coordinator.board import Board, load_board, parse_board, topological_order
from infrafabric.coordinator.formats import backlog, gh_issues, speckit, taskmaster
from infrafabric.coordinator.models import TaskSpec, TaskStatus
from infrafabric.errors import BoardError
from support import Runner, ifctl_runner

SAMPLES = Path(__file__).parent / "samples"
GH = SAMPLES / "gh-issues" / "issues.json"
TASKMASTER = SAMPLES / "taskmaster" / ".taskmaster" / "tasks" / "tasks.json"
BACKLOG = SAMPLES / "backlog" / "backlog"
SPECKIT = SAMPLES / "speckit" / "tasks.md"
BAD = SAMPLES / "bad"


def specs(board: Board) -> dict[str, TaskSpec]:
    return {t.id: t for t in board.tasks}


def completed(board: Board) -> set[str]:
    return {tid for tid, st in board.statuses.items() if st is TaskStatus.COMPLETED}


def problems_of(load: Callable[[], Any]) -> list[str]:
    with pytest.raises(BoardError) as info:
        load()
    return info.value.problems


# --------------------------------------------------------------------------- gh-issues


def test_gh_issues_sample() -> None:
    board = load_board(GH)
    assert board.fmt == "gh-issues"
    assert board.ids == ["GH-40", "GH-41", "GH-42", "GH-43", "GH-44", "GH-45"]
    tasks = specs(board)
    # body lines (several per line), blockedBy nodes, REST blocked_by, sub-issues
    assert tasks["GH-44"].dependencies == ["GH-40", "GH-41", "GH-42", "GH-43"]
    assert tasks["GH-42"].dependencies == ["GH-40"]
    assert tasks["GH-41"].dependencies == ["GH-40", "GH-45"]  # the parent waits for its sub-issue
    assert tasks["GH-44"].capabilities == ["python"]  # 'enhancement' is not a capability
    assert tasks["GH-45"].capabilities == ["infra:postgres"]
    assert tasks["GH-43"].capabilities == ["rust"]
    assert tasks["GH-44"].description == "Parsers for the config files."  # dependency lines taken out
    assert tasks["GH-43"].description == ("Write the schema.\n\n"
                                          "This is blocked by #40 until CI runs the tests.")
    assert tasks["GH-43"].acceptance_criteria == ["validates every example", "documented in docs/schema.md"]
    assert completed(board) == {"GH-40"}
    assert board.owners == {"GH-40": "hubot", "GH-43": "octocat"}
    assert board.statuses["GH-43"] is TaskStatus.CLAIMED


def fake_gh_run(script: str, tmp_path: Path, first_new: int = 100) -> list[list[str]]:
    """Run the exported script under sh with a fake ``gh`` that records its calls."""
    calls, counter = tmp_path / "calls", tmp_path / "counter"
    counter.write_text(str(first_new - 1))
    fake = (
        'gh() { for a in "$@"; do printf "%s\\0" "$a"; done >> "$CALLS"; printf "\\1\\0" >> "$CALLS"; '
        'if [ "$1 $2" = "issue create" ]; then n=$(( $(cat "$COUNTER") + 1 )); echo "$n" > "$COUNTER"; '
        'echo "https://github.com/o/r/issues/$n"; fi; }\n'
    )
    (tmp_path / "sync.sh").write_text(script)
    env = {**os.environ, "CALLS": str(calls), "COUNTER": str(counter)}
    done = subprocess.run(["sh", "-c", fake + '. "$0"', str(tmp_path / "sync.sh")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    out: list[list[str]] = [[]]
    for part in calls.read_bytes().split(b"\0")[:-1]:
        if part == b"\1":
            out.append([])
        else:
            out[-1].append(part.decode())
    return out[:-1]


def simulate_github(calls: list[list[str]], first_new: int = 100) -> list[dict[str, Any]]:
    """The JSON `gh issue list --state all --json ...` would return after those calls."""
    issues: dict[int, dict[str, Any]] = {}
    number = first_new - 1

    def apply(issue: dict[str, Any], args: list[str]) -> None:
        for flag, value in zip(args[::2], args[1::2], strict=True):
            if flag == "--title":
                issue["title"] = value
            elif flag == "--body":
                issue["body"] = value
            elif flag in ("--label", "--add-label"):
                issue["labels"].append({"name": value})
            else:
                raise AssertionError(flag)

    for call in calls:
        if call[:2] == ["label", "create"]:
            continue
        verb = call[:2]
        if verb == ["issue", "create"]:
            number += 1
            issues[number] = {"number": number, "state": "OPEN", "labels": [], "assignees": []}
            apply(issues[number], call[2:])
        elif verb == ["issue", "edit"]:
            issue = issues.setdefault(int(call[2]), {"number": int(call[2]), "state": "OPEN", "labels": [],
                                                     "assignees": []})
            apply(issue, call[3:])
        elif verb == ["issue", "close"]:
            issues[int(call[2])]["state"] = "CLOSED"
        else:
            raise AssertionError(call)
    return [issues[n] for n in sorted(issues, reverse=True)]  # gh lists newest first


def test_gh_issues_round_trip(tmp_path: Path) -> None:
    board = load_board(GH)
    script = gh_issues.export(board.tasks, board.statuses)
    assert script.startswith("#!/bin/sh\n")
    assert "gh issue close 40" in script and "\nnew_issue " not in script
    github = simulate_github(fake_gh_run(script, tmp_path))
    again = parse_board(json.dumps(github), "github.json")
    assert again.fmt == "gh-issues"
    assert specs(again) == specs(board)
    assert completed(again) == completed(board)


def test_gh_issues_export_creates_issues_for_new_tasks(tmp_path: Path) -> None:
    board = parse_board(
        "tasks:\n"
        "  - {id: A, title: \"Bus: it's here\", description: \"Multi\\nline\", capabilities: [python]}\n"
        "  - {id: B, title: Claims, dependencies: [A, GH-7], acceptance_criteria: [atomic, 'a $HOME']}\n"
        "  - {id: GH-7, title: Existing issue}\n",
        "b.yaml",
    )
    script = gh_issues.export(board.tasks, {"A": TaskStatus.COMPLETED})
    github = simulate_github(fake_gh_run(script, tmp_path))
    again = specs(parse_board(json.dumps(github), "github.json", fmt="gh-issues"))
    assert sorted(again) == ["GH-100", "GH-101", "GH-7"]
    a, b = again["GH-100"], again["GH-101"]
    assert (a.title, a.description, a.capabilities) == ("Bus: it's here", "Multi\nline", ["python"])
    assert b.dependencies == ["GH-7", "GH-100"] and b.acceptance_criteria == ["atomic", "a $HOME"]
    assert {i["number"]: i["state"] for i in github}[100] == "CLOSED"


def test_gh_issues_carries_any_board(tmp_path: Path) -> None:
    seed = load_board(Path(gh_issues.__file__).parents[1] / "data" / "phase0-board.md")
    script = gh_issues.export(seed.tasks, seed.statuses)
    again = parse_board(json.dumps(simulate_github(fake_gh_run(script, tmp_path))), "github.json")
    # created dependencies first, so the new numbers follow the topological order
    number = {tid: f"GH-{100 + i}" for i, tid in enumerate(topological_order(seed.tasks))}
    expected = {number[t.id]: t.model_copy(update={
        "id": number[t.id],
        "dependencies": sorted((number[d] for d in t.dependencies), key=lambda d: int(d[3:])),
    }) for t in seed.tasks}
    assert specs(again) == expected  # kind, estimate, model, section... ride in a body comment


def test_gh_issues_malformed() -> None:
    found = problems_of(lambda: load_board(BAD / "gh-syntax.json"))
    assert found == [f"{BAD / 'gh-syntax.json'}:3: not valid JSON: Expecting property name enclosed in "
                     "double quotes (column 52)"]
    found = problems_of(lambda: load_board(BAD / "gh-fields.json", fmt="gh-issues"))
    where = BAD / "gh-fields.json"
    assert f"{where}:2: task GH-1: depends on #7, which is not in the file" in "\n".join(found)
    assert f"{where}:3: task GH-2: missing required field 'title'" in found
    assert f"{where}:4: task GH-3: field 'state' must be OPEN or CLOSED, got 'MERGED'" in found


# --------------------------------------------------------------------------- taskmaster


def test_taskmaster_sample() -> None:
    board = load_board(TASKMASTER)
    assert board.fmt == "taskmaster"
    assert board.ids == ["1", "2", "2.1", "2.2", "3", "3.1", "3.2", "4",
                         "feature-billing:1", "feature-billing:2"]
    tasks = specs(board)
    assert tasks["2"].dependencies == ["1", "2.1", "2.2"]  # a parent waits for its subtasks
    assert tasks["2.2"].dependencies == ["2.1", "1"]  # a sibling, then the parent's dependencies
    assert tasks["3.1"].dependencies == ["2.2", "2"]  # "2.2": a subtask of another task
    assert tasks["feature-billing:2"].dependencies == ["feature-billing:1"]
    assert tasks["2"].acceptance_criteria == ["migrations apply on a fresh database",
                                              "migrations roll back cleanly"]
    assert tasks["1"].description == ("Create the repository layout and tooling.\n\nDetails:\n"
                                      "Use uv for the virtualenv; add ruff and mypy.")
    assert (tasks["1"].priority, tasks["2"].priority, tasks["4"].priority) == (1, 0, -1)
    assert completed(board) == {"1", "2.1"}
    assert board.statuses["feature-billing:2"] is TaskStatus.CANCELLED
    assert board.statuses["3.2"] is TaskStatus.CLAIMED  # review: work done, not accepted yet


def test_taskmaster_round_trip() -> None:
    board = load_board(TASKMASTER)
    text = taskmaster.export(board.tasks, board.statuses)
    data = json.loads(text)
    assert set(data) == {"master", "feature-billing"}
    sub = data["master"]["tasks"][1]["subtasks"][1]
    assert (sub["id"], sub["dependencies"], sub["status"]) == (2, [1], "pending")
    assert data["master"]["tasks"][2]["subtasks"][0]["dependencies"] == ["2.2"]
    assert data["master"]["tasks"][1]["dependencies"] == [1]
    again = parse_board(text, "tasks.json")
    assert again.fmt == "taskmaster"
    assert again.tasks == board.tasks
    assert completed(again) == completed(board)


def test_taskmaster_legacy_and_refusals() -> None:
    legacy = '{"tasks": [{"id": 1, "title": "One", "status": "done"}, {"id": 2, "title": "Two", ' \
             '"dependencies": [1]}]}'
    board = parse_board(legacy, "tasks.json")
    assert board.fmt == "taskmaster" and specs(board)["2"].dependencies == ["1"]
    assert completed(board) == {"1"}



def test_taskmaster_exports_any_board() -> None:
    seed = load_board(Path(taskmaster.__file__).parents[1] / "data" / "phase0-board.md")
    text = taskmaster.export(seed.tasks, seed.statuses)
    second = json.loads(text)["master"]["tasks"][1]
    assert (second["id"], second["dependencies"], second["infrafabric"]["id"]) == (2, [1], "P0.1.2")
    assert second["infrafabric"]["model"] == "Sonnet"  # what task-master has no field for
    assert parse_board(text, "tasks.json").tasks == seed.tasks


def test_taskmaster_malformed() -> None:
    where = BAD / "taskmaster-syntax.json"
    assert problems_of(lambda: load_board(where, fmt="taskmaster")) == [
        f"{where}:5: not valid JSON: Expecting ',' delimiter (column 7)"]
    where = BAD / "taskmaster-fields.json"
    found = problems_of(lambda: load_board(where))
    assert f"{where}:5: task 2: missing required field 'title'" in found
    assert f"{where}:6: task 3: depends on unknown task '9'" in found
    assert any(p.startswith(f"{where}:7: task 4: field 'status' must be one of pending") for p in found)


# --------------------------------------------------------------------------- backlog


def test_backlog_sample_directory_tasks_directory_and_file() -> None:
    board = load_board(BACKLOG)
    assert board.fmt == "backlog"
    assert board.ids == ["task-1", "task-2", "task-2.1", "task-3", "task-0"]
    tasks = specs(board)
    assert tasks["task-2"].dependencies == ["task-1", "task-2.1"]  # a parent waits for its subtasks
    assert tasks["task-3"].dependencies == ["task-2", "task-0"]  # '0' is task-0, in completed/
    assert tasks["task-1"].capabilities == ["python"]  # 'infra' is a plain label
    assert tasks["task-3"].capabilities == ["frontend:react"]
    assert tasks["task-3"].title == "Checkout flow: cart, payment, receipt"
    assert tasks["task-3"].description == ("The three-step checkout.\n\n"
                                           "Payment goes through the payment provider's hosted page.")
    assert tasks["task-3"].acceptance_criteria == ["cart survives a reload",
                                                   "a failed payment returns to the cart"]
    assert tasks["task-2"].acceptance_criteria[1] == "GET /products/{id} returns 404 for unknown ids"
    assert (tasks["task-1"].priority, tasks["task-3"].priority) == (1, -1)
    assert completed(board) == {"task-1", "task-0"}
    assert board.owners == {"task-1": "alice", "task-2": "bob"}
    assert board.statuses["task-2"] is TaskStatus.CLAIMED

    with pytest.raises(BoardError, match="depends on unknown task '0'"):
        load_board(BACKLOG / "tasks", fmt="backlog")  # task-0 lives in completed/, beside tasks/
    one = load_board(BACKLOG / "tasks" / "task-1 - Set-up-the-repository.md")
    assert one.fmt == "backlog" and one.ids == ["task-1"]


def test_backlog_round_trip(tmp_path: Path) -> None:
    board = load_board(BACKLOG)
    out = tmp_path / "backlog" / "tasks"
    written = backlog.export_dir(board.tasks, out, board.statuses, board.owners)
    assert sorted(p.name for p in written)[0] == "task-0 - Pick-a-name.md"
    assert (out / "task-3 - Checkout-flow-cart-payment-receipt.md").is_file()
    again = load_board(tmp_path / "backlog")
    assert again.tasks == board.tasks  # in board order: the files' ordinal
    assert completed(again) == completed(board)
    assert again.owners == board.owners
    with pytest.raises(BoardError, match="5 task files already exist, nothing written"):
        backlog.export_dir(board.tasks, out, board.statuses)


def test_backlog_exports_any_board(tmp_path: Path) -> None:
    seed = load_board(Path(backlog.__file__).parents[1] / "data" / "phase0-board.md")
    backlog.export_dir(seed.tasks, tmp_path, seed.statuses)
    text = next(tmp_path.glob("F1.4 - *.md")).read_text()
    assert "infrafabric:\n  kind: filler\n" in text  # what Backlog.md has no field for
    assert load_board(tmp_path).tasks == seed.tasks


def test_backlog_malformed() -> None:
    where = BAD / "backlog" / "tasks"
    found = problems_of(lambda: load_board(BAD / "backlog"))
    one, two, three = (str(where / n) for n in ("task-1 - One.md", "task-2 - Two.md", "task-3 - Three.md"))
    assert any(p.startswith(f"{one}:5: front matter is not valid YAML") for p in found), found
    assert f"{two}:2: task task-2: missing required field 'title'" in found
    assert f"{three}:2: task task-3: depends on unknown task 'task-9'" in found


# --------------------------------------------------------------------------- speckit


def test_speckit_sample() -> None:
    board = load_board(SPECKIT)
    assert board.fmt == "speckit"
    assert board.ids == [f"T{n:03}" for n in range(1, 18)]  # T999 sits in a code block
    tasks = specs(board)
    deps = {tid: t.dependencies for tid, t in tasks.items()}
    assert deps["T001"] == [] and deps["T002"] == ["T001"]
    assert deps["T003"] == ["T002"]  # [P] after a sequential task waits for it
    assert deps["T004"] == ["T003"]  # a phase waits for the previous one
    assert deps["T005"] == deps["T006"] == ["T004"]  # a run of [P] tasks shares what precedes it
    assert deps["T007"] == ["T005", "T006"]  # and the next task waits for the whole run
    assert deps["T008"] == deps["T010"] == ["T007"]  # user story 1 waits for the foundation
    assert deps["T012"] == ["T008", "T009", "T010", "T011"]
    assert deps["T013"] == ["T012", "T005"]  # (depends on T005) adds a dependency
    assert deps["T014"] == ["T007"]  # user story 2 runs in parallel with story 1
    assert deps["T016"] == ["T013", "T015"]  # polish waits for every story
    assert tasks["T013"].title == "[US1] Implement POST /albums in src/api/albums.py"
    assert tasks["T004"].paths == ["src/db/migrations/**"]
    assert tasks["T003"].paths == ["ruff.toml"]
    assert tasks["T015"].paths == ["frontend/src/components/ShareDialog.tsx"]
    assert tasks["T010"].section == "Phase 3: User Story 1 - Create albums (Priority: P1) 🎯 MVP"
    assert completed(board) == {"T001", "T002"}


def test_speckit_round_trip() -> None:
    board = load_board(SPECKIT)
    text = speckit.export(board.tasks, board.statuses)
    assert "- [x] T001 Create project structure" in text
    assert "- [ ] T005 [P] Implement authentication framework" in text
    assert "infrafabric" not in text  # a board that came from a tasks.md needs no comment
    again = parse_board(text, "tasks.md")
    assert again.tasks == board.tasks
    assert completed(again) == completed(board)


def test_speckit_exports_any_dependencies() -> None:
    board = parse_board(
        "tasks:\n"
        "  - {id: A1, title: first, section: Build}\n"
        "  - {id: A2, title: second, section: Build}\n"
        "  - {id: A3, title: third, section: Build, dependencies: [A1]}\n"
        "  - {id: B1, title: fourth, section: Ship, dependencies: [A3, A2]}\n"
        "  - {id: B2, title: fifth, section: Ship}\n",
        "b.yaml",
    )
    text = speckit.export(board.tasks)
    again = parse_board(text, "tasks.md", fmt="speckit")
    assert again.tasks == board.tasks
    assert "(no dependencies)" in text and "(depends only on A1)" in text
    assert '<!-- infrafabric: {"section": "Build"} -->' in text  # the heading says "Phase 1: Build"
    seed = load_board(Path(speckit.__file__).parents[1] / "data" / "phase0-board.md")
    assert parse_board(speckit.export(seed.tasks), "tasks.md").tasks == seed.tasks
    tm = load_board(TASKMASTER)  # ids like 1.2 cannot start a task line: written T001, T002, ...
    text = speckit.export(tm.tasks, tm.statuses)
    assert '- [x] T001 Initialize project <!-- infrafabric: {"description":' in text
    assert '"id": "1"} -->' in text
    again = parse_board(text, "tasks.md")
    assert again.tasks == tm.tasks and completed(again) == completed(tm)


def test_speckit_malformed() -> None:
    where = BAD / "speckit-tasks.md"
    found = problems_of(lambda: load_board(where))
    assert f"{where}:6: task T002: checkbox [?] is neither [ ] nor [x]" in found
    assert f"{where}:7: task T003: the task has no description (expected '- [ ] T001 Description')" in found
    assert (f"{where}:8: a checklist item in a phase has no task id "
            "(expected '- [ ] T001 Description')") in found
    assert f"{where}:12: task T004: depends on unknown task 'T099'" in found


# --------------------------------------------------------------------------- detection


def test_detection_and_format_names(tmp_path: Path) -> None:
    plain_json = '{"version": 1, "tasks": [{"id": "A", "title": "a"}]}'
    assert parse_board(plain_json, "board.json").fmt == "json"
    assert parse_board('{"tasks": [{"id": "A", "title": "a"}]}', "board.json").fmt == "json"
    assert parse_board("| ID | Task |\n|--|--|\n| A | a |\n", "board.md").fmt == "md"
    assert parse_board("tasks:\n  - {id: A, title: a}\n", "board.yaml").fmt == "yaml"
    assert parse_board(GH.read_text(), "issues.json").fmt == "gh-issues"
    assert parse_board(SPECKIT.read_text(), "tasks.md").fmt == "speckit"
    assert parse_board(TASKMASTER.read_text(), "x.json", fmt="task-master").fmt == "taskmaster"
    assert formats.canonical("spec-kit") == "speckit"
    with pytest.raises(BoardError, match="unknown board format 'jira'"):
        parse_board("x", fmt="jira")
    with pytest.raises(BoardError, match="only the backlog format reads a directory"):
        load_board(tmp_path, fmt="speckit")


# --------------------------------------------------------------------------- CLI



@pytest.fixture
def run(nats_server: NatsServer, namespace: str, tmp_path: Path) -> Runner:
    return ifctl_runner(f"{nats_server.url}?namespace={namespace}", tmp_path)


def test_cli_imports_a_backlog_directory_and_exports_it(run: Runner, tmp_path: Path) -> None:
    bad = run("board", "import", str(BAD / "backlog"))
    assert bad.returncode == 2
    assert "task-2 - Two.md:2: task task-2: missing required field 'title'" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert json.loads(run("board", "show", "--json").stdout)["tasks"] == []
    imported = run("board", "import", str(BACKLOG), "--json", "--no-infer")
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert report["imported"] == 5 and report["by_status"] == {"available": 1, "blocked": 2, "completed": 2}
    out = tmp_path / "exported"
    exported = run("board", "export", "--format", "backlog", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert specs(load_board(out)) == specs(load_board(BACKLOG))
    again = run("board", "export", "--format", "backlog", "--out", str(out))
    assert again.returncode == 2 and "already exist, nothing written" in again.stderr


def test_cli_imports_gh_issues_and_refuses_a_malformed_file(run: Runner, tmp_path: Path) -> None:
    bad = run("board", "import", str(BAD / "gh-fields.json"), "--format", "gh-issues")
    assert bad.returncode == 2 and "gh-fields.json:3: task GH-2: missing required field 'title'" in bad.stderr
    assert "Traceback" not in bad.stderr
    copy = tmp_path / "issues.json"
    shutil.copy(GH, copy)
    imported = run("board", "import", str(copy), "--json")
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert report["imported"] == 6 and report["completed_on_board"] == ["GH-40"]
    assert report["by_status"] == {"available": 3, "blocked": 2, "completed": 1}
    script = run("board", "export", "--format", "gh-issues")
    assert script.returncode == 0 and "gh issue close 40" in script.stdout


@pytest.mark.parametrize(("sample", "fmt", "says"), [
    ("gh-syntax.json", "gh-issues", "gh-syntax.json:3: not valid JSON"),
    ("taskmaster-syntax.json", "taskmaster", "taskmaster-syntax.json:5: not valid JSON"),
    ("taskmaster-fields.json", None, "taskmaster-fields.json:6: task 3: depends on unknown task '9'"),
    ("speckit-tasks.md", "speckit", "speckit-tasks.md:"),
])
def test_cli_refuses_each_malformed_format_and_writes_nothing(run: Runner, sample: str, fmt: str | None,
                                                              says: str) -> None:
    args = ["board", "import", str(BAD / sample)] + (["--format", fmt] if fmt else [])
    bad = run(*args)
    assert bad.returncode == 2 and says in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    assert json.loads(run("board", "show", "--json").stdout)["tasks"] == []
