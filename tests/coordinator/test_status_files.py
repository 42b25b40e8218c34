"""The seeds' STATUS-SESSION files: parsed, validated and planned as a replay (pure: no bus)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrafabric.coordinator.models import Task, TaskStatus
from infrafabric.coordinator.status_files import (
    find_status_files,
    load_status_files,
    parse_status_file,
    plan_replay,
)
from infrafabric.errors import BoardError, ConfigurationError

SAMPLES = Path(__file__).parent / "samples"


def board(*tasks: Task) -> dict[str, Task]:
    return {t.id: t for t in tasks}


def test_every_shape_of_the_seeds_parses() -> None:
    reports = {r.session: r for r in load_status_files([SAMPLES / "status"])}
    assert sorted(reports) == ["session-1", "session-2", "session-3", "session-4", "session-5-cli",
                               "session-7-ifbus"]
    done = reports["session-5-cli"]
    assert done.completed == {"P0.1.1": 2} and done.tests_pass is True
    assert done.deliverable == "infrafabric/event_bus.py" and done.timestamp == "2025-11-12T15:45:00Z"
    working = reports["session-7-ifbus"]
    assert working.working_on == {"P0.1.2": 2} and working.blocked_on == {"P0.1.1": 6}
    assert working.milestone is not None and working.milestone.percent == 50
    assert str(working.milestone) == "50% - CAS transaction logic implemented"
    assert working.counts == {"tasks_completed": 1, "tasks_in_progress": 1}
    assert reports["session-1"].working_on == {"P0.2.1": 2}
    assert str(reports["session-2"].milestone) == "100% - Complete"
    idle = reports["session-3"]
    assert idle.working_on == {} and idle.status == "polling" and idle.filler and idle.help_wanted is False
    assert reports["session-4"].timestamp == "2025-11-12T16:05:12+00:00"  # last_poll


def test_the_session_comes_from_the_file_name_when_absent() -> None:
    report = parse_status_file("completed: [A, B]\ncompleted_tasks: [C]\n", "x/STATUS-SESSION-7-IFBUS.yaml")
    assert report.session == "session-7-ifbus" and list(report.completed) == ["A", "B", "C"]
    assert parse_status_file("current_task: none\nblocked_on: null\n", "STATUS-s9.yml").working_on == {}


@pytest.mark.parametrize(("text", "says"), [
    ('session: s\nmilestone: "150% - overdone"\n', "STATUS-X.yaml:2: milestone: 150% is more than 100%"),
    ("session: s\ncompletd: P1\n", "STATUS-X.yaml:2: unknown key 'completd': did you mean 'completed'?"),
    ("session: s\ntimestamp: $(date -Iseconds)\n", "STATUS-X.yaml:2: timestamp: '$(date -Iseconds)' is not"),
    ("session: s\ncompleted: {a: b}\n", "STATUS-X.yaml:2: completed:"),
    ("session: s\ncompleted: [P1, 'has space']\n", "X.yaml:2: completed: 'has space' is not a task id"),
    ("session: s\ntests_pass: maybe\n", "STATUS-X.yaml:2: tests_pass must be true or false"),
    ("session: s\ntasks_in_progress: -1\n", "STATUS-X.yaml:2: tasks_in_progress must be a count"),
    ("session: session-{N}\n", "STATUS-X.yaml:1: session 'session-{N}' is not a swarm id"),
    ("session: s\nsession: t\n", "STATUS-X.yaml:2: session is given twice"),
    ("session: [s\n", "STATUS-X.yaml:2: not valid YAML"),
    ("- a\n", "STATUS-X.yaml:1: a STATUS file is one YAML mapping"),
    ("status: polling\n", "no session"),
])
def test_malformed_files_name_file_line_and_problem(text: str, says: str) -> None:
    name = "STATUS-X.yaml" if "no session" not in says else "status.yaml"
    with pytest.raises(BoardError) as err:
        parse_status_file(text, name)
    assert any(says in p for p in err.value.problems), err.value.problems
    assert err.value.exit_code == 2


def test_unknown_keys_warn_and_bad_files_are_all_reported_together() -> None:
    report = parse_status_file("session: s\nmood: great\n", "STATUS-s.yaml")
    assert report.warnings == ["STATUS-s.yaml:2: unknown key 'mood' ignored"]
    with pytest.raises(BoardError) as err:
        load_status_files([SAMPLES / "status-bad"])
    text = "\n".join(err.value.problems)
    assert "STATUS-SESSION-8.yaml:3: milestone" in text and "STATUS-SESSION-9.yaml:2: unknown key" in text
    assert "STATUS-SESSION-9.yaml:3: timestamp" in text


def test_files_are_found_in_directories(tmp_path: Path) -> None:
    assert len(find_status_files([SAMPLES / "status"])) == 6
    with pytest.raises(ConfigurationError, match="no STATUS"):
        find_status_files([tmp_path])
    with pytest.raises(ConfigurationError, match="no such file"):
        find_status_files([tmp_path / "nope.yaml"])


def test_the_replay_plan_completes_notes_and_leaves_what_is_there() -> None:
    reports = load_status_files([SAMPLES / "status"])
    live = board(Task(id="P0.1.1", title="bus", status=TaskStatus.AVAILABLE),
                 Task(id="P0.1.2", title="cas", dependencies=["P0.1.1"]),
                 Task(id="P0.2.1", title="schema", status=TaskStatus.AVAILABLE),
                 Task(id="P0.2.3", title="budget", status=TaskStatus.COMPLETED, owner="session-2"))
    plan = plan_replay(reports, live, now=0.0)
    assert plan.errors == [] and plan.refusals == []
    assert [(c.task_id, c.by) for c in plan.complete] == [("P0.1.1", "session-5-cli")]
    assert "replayed from STATUS-SESSION-5-CLI.yaml (2025-11-12T15:45:00Z)" in plan.complete[0].reason
    assert "tests pass" in plan.complete[0].reason
    notes = {n.task_id: n.note for n in plan.notes}
    assert notes["P0.1.2"].startswith("session-7-ifbus: 50% - CAS transaction logic implemented")
    assert "next: Waiting for etcd/NATS setup" in notes["P0.1.2"]
    assert notes["P0.2.1"].startswith("session-1: 0% - Starting task")
    assert ("P0.2.3", "already completed (by session-2)") in plan.unchanged
    again = board(*(t.model_copy(update={"progress": notes.get(t.id)}) for t in live.values()))
    again["P0.1.1"] = again["P0.1.1"].model_copy(update={"status": TaskStatus.COMPLETED})
    second = plan_replay(reports, again, now=0.0)
    assert second.complete == [] and second.notes == []  # idempotent


def test_unknown_ids_claims_and_contradictions() -> None:
    done = parse_status_file("session: s1\ncompleted: [B, Z]\n", "STATUS-s1.yaml")
    live = board(Task(id="A", title="a"), Task(id="B", title="b", dependencies=["A"]))
    plan = plan_replay([done], live, now=0.0)
    assert plan.errors == ["STATUS-s1.yaml:2: task Z is not on the board"]
    skipped = plan_replay([done], live, now=0.0, skip_unknown=True)
    assert skipped.errors == [] and [c.task_id for c in skipped.complete] == ["B"]
    assert any("dependencies A are not" in w for w in skipped.warnings)
    claimed = board(Task(id="B", title="b", status=TaskStatus.CLAIMED, owner="s2", lease_until=100.0),
                    Task(id="Z", title="z", status=TaskStatus.FAILED))
    refused = plan_replay([done], claimed, now=50.0)
    assert len(refused.refusals) == 2 and "claimed by s2" in refused.refusals[0]
    lapsed = plan_replay([done], claimed, now=150.0)
    assert [c.task_id for c in lapsed.complete] == ["B"]
    other = parse_status_file("session: s3\ncompleted: B\ntimestamp: 2030-01-01T00:00:00Z\n",
                              "STATUS-s3.yaml")
    both = plan_replay([other, done], live, now=0.0, skip_unknown=True)
    assert [c.by for c in both.complete] == ["s1"]  # the earliest report (no timestamp sorts first)
    assert any("also reported completed by" in w for w in both.warnings)


def test_completions_are_replayed_dependencies_first() -> None:
    done = parse_status_file("session: s\ncompleted: [C, A, B]\n", "STATUS-s.yaml")
    live = board(Task(id="C", title="c", dependencies=["B"]), Task(id="B", title="b", dependencies=["A"]),
                 Task(id="A", title="a"))
    assert [c.task_id for c in plan_replay([done], live, now=0.0).complete] == ["A", "B", "C"]
