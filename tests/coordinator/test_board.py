"""The task-board parser: the Phase 0 seed board, every error case, YAML/JSON, export round trips."""

from __future__ import annotations

import hashlib
import json
import random
import textwrap
from collections.abc import Callable, Sequence
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrafabric.coordinator.board import (
    Board,
    export_json,
    export_markdown,
    export_yaml,
    load_board,
    parse_board,
    parse_estimate,
    parse_status,
    topological_order,
)
from infrafabric.coordinator.models import TaskKind, TaskSpec, TaskStatus
from infrafabric.errors import BoardError, ConfigurationError

SEED = resources.files("infrafabric.coordinator") / "data" / "phase0-board.md"
# the user's board as delivered (shared/ sits beside the repository)
SHARED_SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "000_f7653c82d1875657.txt"
SEED_SHA256 = "44db94cb0f15b8700bcdb6100bbfe61d58e8e985a71eba99dd8aecd64b559b0d"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "board-format.md"

CRITICAL_IDS = (
    [f"P0.1.{i}" for i in range(1, 6)]
    + [f"P0.2.{i}" for i in range(1, 7)]
    + [f"P0.3.{i}" for i in range(1, 7)]
    + [f"P0.4.{i}" for i in range(1, 5)]
    + [f"P0.5.{i}" for i in range(1, 6)]
)
FILLER_IDS = (
    [f"F1.{i}" for i in range(1, 5)]
    + [f"F2.{i}" for i in range(1, 5)]
    + [f"F3.{i}" for i in range(1, 5)]
    + [f"F4.{i}" for i in range(1, 6)]
    + [f"F5.{i}" for i in range(1, 7)]
    + [f"F7.{i}" for i in range(1, 6)]
)


@pytest.fixture(scope="module")
def seed() -> Board:
    return parse_board(SEED.read_text(encoding="utf-8"), source="phase0-board.md")


def mojibake(text: str) -> str:
    """UTF-8 read as Windows-1252, as in the seed board: "🔵" -> "ðŸ”µ"."""
    return text.encode("utf-8").decode("cp1252")


def md(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def problems_of(text: str, fmt: str | None = "md", source: str = "b.md") -> list[str]:
    with pytest.raises(BoardError) as info:
        parse_board(text, source=source, fmt=fmt)
    return info.value.problems


# --------------------------------------------------------------------------- the seed board


def test_packaged_board_is_a_verbatim_copy_of_the_seed() -> None:
    data = SEED.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SEED_SHA256
    if SHARED_SEED.exists():  # and, where the user's copy is at hand, byte for byte
        assert data == SHARED_SEED.read_bytes()


def test_seed_imports_completely(seed: Board) -> None:
    assert [t.id for t in seed.tasks] == CRITICAL_IDS + FILLER_IDS
    assert len(seed.of_kind(TaskKind.CRITICAL)) == 26
    assert len(seed.of_kind(TaskKind.FILLER)) == 28
    assert [t.id for t in seed.of_kind(TaskKind.FILLER)] == FILLER_IDS
    assert seed.fmt == "md"


def test_seed_dependencies(seed: Board) -> None:
    assert seed.get("P0.1.1").dependencies == []
    assert seed.get("P0.1.4").dependencies == ["P0.1.2", "P0.1.3"]
    assert seed.get("P0.1.5").dependencies == ["P0.1.1", "P0.1.2", "P0.1.3", "P0.1.4"]
    # "All above": every task in the rows above, same table
    assert seed.get("P0.2.6").dependencies == [f"P0.2.{i}" for i in range(1, 6)]
    assert seed.get("P0.3.6").dependencies == [f"P0.3.{i}" for i in range(1, 6)]
    # "All components": the critical tasks of the tables before the documentation table
    expected = [i for i in CRITICAL_IDS if not i.startswith("P0.5.")]
    assert seed.get("P0.5.5").dependencies == expected
    assert len(expected) == 21
    assert seed.get("P0.4.4").dependencies == ["P0.1.2"]
    assert all(t.dependencies == [] for t in seed.of_kind(TaskKind.FILLER))


def test_seed_details_are_attached(seed: Board) -> None:
    p011 = seed.get("P0.1.1")
    assert p011.description == (
        "Create event bus infrastructure using either etcd or NATS for real-time coordination"
    )
    assert len(p011.acceptance_criteria) == 6
    assert p011.acceptance_criteria[0] == "etcd or NATS client library installed and configured"
    assert p011.acceptance_criteria[-1] == "Graceful reconnection on connection loss"
    assert (
        seed.get("P0.1.2").acceptance_criteria[0] == "`claim_task(swarm_id, task_id)` method with atomic CAS"
    )
    assert len(seed.get("P0.4.3").acceptance_criteria) == 5
    assert seed.get("P0.5.5").description == "Complete production operations guide"
    for task in seed.of_kind(TaskKind.CRITICAL):
        assert task.description, task.id
        assert len(task.acceptance_criteria) >= 5, task.id
    # nothing from the implementation guides or the testing lists leaks in
    assert not any("Connection successful" in c for c in p011.acceptance_criteria)
    assert seed.get("F1.2").description == "Create example hash chain for coordination events"
    assert seed.get("F1.2").acceptance_criteria == []


def test_seed_cells(seed: Board) -> None:
    p012 = seed.get("P0.1.2")
    assert p012.title == "Implement atomic CAS operations"
    assert p012.deliverable == "/home/user/infrafabric/infrafabric/coordinator.py (CAS methods)"
    assert p012.estimate_hours == Decimal(2)
    assert p012.model == "Sonnet"
    assert p012.priority == 0
    assert p012.section == "IF.coordinator Tasks (Bug #1 - CRITICAL)"
    assert seed.get("P0.3.1").estimate_hours == Decimal(3)
    assert seed.get("P0.4.1").title == "Unified CLI entry (`if` command)"
    assert seed.get("P0.5.1").section == "Documentation Tasks"
    f45 = seed.get("F4.5")
    assert f45.kind == TaskKind.FILLER
    assert f45.section == "Session 4 (SIP) Filler Tasks"
    assert f45.model is None and f45.deliverable is None
    assert seed.get("F4.1").estimate_hours == Decimal(2)


def test_seed_status_column_is_read_but_not_trusted(seed: Board) -> None:
    assert seed.statuses["P0.1.1"] == TaskStatus.AVAILABLE
    assert mojibake("🔵 AVAILABLE") in SEED.read_text(encoding="utf-8")
    assert seed.statuses["P0.1.2"] == "available"  # the mis-encoded emoji is ignored
    assert seed.statuses["P0.1.4"] == TaskStatus.BLOCKED
    assert len(seed.statuses) == 26  # the filler tables have no status column
    assert seed.owners == {}  # every owner is "-"
    assert seed.lines["P0.1.2"] == 48
    assert seed.lines["F1.1"] == 1676


def test_seed_warnings(seed: Board) -> None:
    assert (
        "phase0-board.md:48: task P0.1.2: P0.1.2 is marked AVAILABLE but depends on P0.1.1, "
        "which is not completed" in seed.warnings
    )
    assert any("task P0.1.3: P0.1.3 is marked AVAILABLE but depends on P0.1.1" in w for w in seed.warnings)
    assert "phase0-board.md:6: the board says 20 filler tasks but lists 28" in seed.warnings
    assert "phase0-board.md:6: the board says 46 tasks but lists 54" in seed.warnings
    assert not any("critical-path" in w for w in seed.warnings)  # 26 is right
    assert len(seed.warnings) == 4


def test_seed_topological_order_is_the_file_order(seed: Board) -> None:
    assert topological_order(seed.tasks) == seed.ids


def test_load_board_reads_the_packaged_file() -> None:
    with resources.as_file(SEED) as path:
        board = load_board(path)
    assert board.source == str(path)
    assert len(board.tasks) == 54


# --------------------------------------------------------------------------- markdown grammar

SMALL = md(
    """
    # Board

    | ID | Title | State | Owner | Depends on | Est. (h) | Capabilities | Priority | Budget |
    |:---|:-----:|-------|-------|------------|----------|--------------|----------|--------|
    | A | first | ✅ DONE | alice | — | 30m | python, infra:net | 5 | $2.50 |
    | B | second \\| piped | IN PROGRESS | bob | A | 1h 30m | - | -1 | - |
    | C | third | **COMPLETED** | - | A; B | 1.5 | | | |

    ```
    | ID | Task |
    |----|------|
    | X | inside a code block |
    ```
    """
)


def test_markdown_column_variants() -> None:
    board = parse_board(SMALL, "small.md")
    a, b, c = board.tasks
    assert (a.id, b.id, c.id) == ("A", "B", "C")
    assert a.section is None and a.kind == TaskKind.CRITICAL
    assert a.estimate_hours == Decimal("0.5")
    assert b.estimate_hours == Decimal("1.5")
    assert c.estimate_hours == Decimal("1.5")
    assert a.capabilities == ["python", "infra:net"]
    assert (a.priority, b.priority, c.priority) == (5, -1, 0)
    assert a.budget_micros == 2_500_000 and b.budget_micros is None
    assert b.title == "second | piped"
    assert c.dependencies == ["A", "B"]
    assert board.statuses == {"A": TaskStatus.COMPLETED, "B": TaskStatus.CLAIMED, "C": TaskStatus.COMPLETED}
    assert board.owners == {"A": "alice", "B": "bob"}
    # C is completed while B is only in progress: contradiction
    assert board.warnings == [
        "small.md:7: task C: C is marked COMPLETED but depends on B, which is not completed"
    ]


def test_blocked_without_open_dependencies_warns() -> None:
    board = parse_board(
        md(
            """
            | ID | Task | Status | Deps |
            |----|------|--------|------|
            | A | a | BLOCKED | - |
            | B | b | DONE | - |
            | C | c | 🔴 BLOCKED | B |
            """
        )
    )
    assert board.warnings == [
        "<board>:3: task A: A is marked BLOCKED but it has no dependencies",
        "<board>:5: task C: C is marked BLOCKED but all its dependencies are completed",
    ]


def test_filler_heading_rules() -> None:
    board = parse_board(
        md(
            """
            ## Filler Tasks by Session
            ### Session 9
            | ID | Task |
            |----|------|
            | F9.1 | under a filler h2 |
            ## Work
            | ID | Task | Kind |
            |----|------|------|
            | W1 | normal | |
            | W2 | forced | filler |
            ### Later filler work
            | ID | Task |
            |----|------|
            | F1 | filler by its own heading |
            """
        )
    )
    kinds = {t.id: (t.kind.value, t.section) for t in board.tasks}
    assert kinds == {
        "F9.1": ("filler", "Session 9"),
        "W1": ("critical", "Work"),
        "W2": ("filler", "Work"),
        "F1": ("filler", "Later filler work"),
    }


def test_all_above_and_all_components_in_a_small_board() -> None:
    board = parse_board(
        md(
            """
            ## One
            | ID | Task | Dependencies |
            |----|------|--------------|
            | A | a | None |
            | B | b | A |
            ## Filler
            | ID | Task |
            |----|------|
            | F | f |
            ## Two
            | ID | Task | Dependencies |
            |----|------|--------------|
            | C | c | - |
            | D | d | All above |
            | E | e | All components |
            """
        )
    )
    assert board.get("D").dependencies == ["C"]
    assert board.get("E").dependencies == ["A", "B"]  # critical tasks of earlier tables only


def test_details_heading_title_mismatch_warns_and_details_description_wins() -> None:
    board = parse_board(
        md(
            """
            | ID | Task | Description |
            |----|------|-------------|
            | A | Alpha | short |

            ### A: Alpha renamed

            **Description:** a longer
            paragraph

            **Acceptance Criteria:**

            - [x] done already
            - [ ] still open
            * plain bullet

            **Testing:**
            - not a criterion
            """
        )
    )
    a = board.get("A")
    assert a.description == "a longer\nparagraph"
    assert a.acceptance_criteria == ["done already", "still open", "plain bullet"]
    assert any("details heading says 'Alpha renamed'" in w for w in board.warnings)
    assert any("replaces the one in the table" in w for w in board.warnings)


def test_unknown_columns_are_ignored_with_a_warning() -> None:
    board = parse_board("| ID | Task | Colour |\n|--|--|--|\n| A | a | red |\n")
    assert board.warnings == ["<board>:1: column 'Colour' is not a board column and was ignored"]


@pytest.mark.parametrize(
    ("cell", "status", "word"),
    [
        (mojibake("🔵 AVAILABLE"), TaskStatus.AVAILABLE, "AVAILABLE"),
        (mojibake("🔴 BLOCKED"), TaskStatus.BLOCKED, "BLOCKED"),
        (mojibake("🟡 CLAIMED"), TaskStatus.CLAIMED, "CLAIMED"),
        ("🟢 COMPLETED", TaskStatus.COMPLETED, "COMPLETED"),
        ("complete", TaskStatus.COMPLETED, "COMPLETE"),
        ("✅ Done", TaskStatus.COMPLETED, "DONE"),
        ("In Progress", TaskStatus.CLAIMED, "IN PROGRESS"),
        ("IN_PROGRESS", TaskStatus.CLAIMED, "IN PROGRESS"),
        ("❌ FAILED", TaskStatus.FAILED, "FAILED"),
        ("CANCELLED", TaskStatus.CANCELLED, "CANCELLED"),
        ("canceled", TaskStatus.CANCELLED, "CANCELED"),
    ],
)
def test_status_words(cell: str, status: TaskStatus, word: str) -> None:
    assert parse_status(cell) == (status, word)


@pytest.mark.parametrize("cell", ["", "  ", "-", "—"])
def test_empty_status(cell: str) -> None:
    assert parse_status(cell) is None


@pytest.mark.parametrize(
    ("cell", "hours"),
    [
        ("1h", Decimal(1)),
        ("30m", Decimal("0.5")),
        ("1.5h", Decimal("1.5")),
        ("1h 30m", Decimal("1.5")),
        ("2 hours", Decimal(2)),
        ("90 min", Decimal("1.5")),
        ("2", Decimal(2)),
        ("0.25", Decimal("0.25")),
        ("-", None),
        ("", None),
    ],
)
def test_estimates(cell: str, hours: Decimal | None) -> None:
    assert parse_estimate(cell) == hours


@pytest.mark.parametrize("cell", ["2 days", "6-8 hours", "-1h", "soon", "h"])
def test_bad_estimates(cell: str) -> None:
    with pytest.raises(ValueError, match="cannot read estimate"):
        parse_estimate(cell)


# --------------------------------------------------------------------------- errors

HEADER = "| ID | Task | Status | Dependencies |\n|----|------|--------|--------------|\n"


def test_board_error_is_a_configuration_error_with_exit_code_2() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_board(HEADER + "| A | a | | B |\n", source="x.md")
    assert isinstance(info.value, BoardError)
    assert info.value.exit_code == 2
    assert info.value.problems == ["x.md:3: task A: depends on unknown task 'B'"]
    assert "x.md:3: task A: depends on unknown task 'B'" in str(info.value)


def test_duplicate_ids_name_both_lines() -> None:
    problems = problems_of(HEADER + "| A | a | | |\n| B | b | | |\n| A | again | | |\n")
    assert problems == ["b.md:5: task A: duplicate task id (first defined at line 3)"]


def test_unknown_dependency() -> None:
    assert problems_of(HEADER + "| A | a | | P0.9.9, B |\n| B | b | | |\n") == [
        "b.md:3: task A: depends on unknown task 'P0.9.9'"
    ]


@pytest.mark.parametrize("text", ["after the bus is up", "P0.1.1 P0.1.2", "A,,B", "TBD?"])
def test_unresolvable_dependency_text(text: str) -> None:
    problems = problems_of(HEADER + f"| A | a | | |\n| B | b | | {text} |\n")
    assert len(problems) == 1
    assert problems[0].startswith(f"b.md:4: task B: cannot resolve dependencies {text!r}")


def test_all_above_on_the_first_row_and_all_components_without_earlier_tables() -> None:
    problems = problems_of(HEADER + "| A | a | | All above |\n| B | b | | All components |\n")
    assert problems == [
        "b.md:3: task A: 'All above' names no task: it is the first row of its table",
        "b.md:4: task B: 'All components' names no task: no critical-path table comes before this one",
    ]


def test_self_dependency() -> None:
    assert problems_of(HEADER + "| A | a | | A |\n") == ["b.md:3: task A: depends on itself"]


def test_cycle_names_the_whole_cycle() -> None:
    text = HEADER + "| A | a | | C |\n| B | b | | A |\n| C | c | | B |\n| D | d | | A |\n"
    assert problems_of(text) == [
        "b.md:3: task A: dependency cycle A -> C -> B -> A (each depends on the next)"
    ]


def test_two_separate_cycles_are_both_reported() -> None:
    text = HEADER + "| A | a | | B |\n| B | b | | A |\n| C | c | | D |\n| D | d | | E |\n| E | e | | C |\n"
    assert problems_of(text) == [
        "b.md:3: task A: dependency cycle A -> B -> A (each depends on the next)",
        "b.md:5: task C: dependency cycle C -> D -> E -> C (each depends on the next)",
    ]


def test_unknown_status_names_the_line() -> None:
    problems = problems_of(HEADER + f"| A | a | {mojibake('🔵')} READY-ISH | |\n| B | b | 🔵 | |\n")
    assert problems[0].startswith("b.md:3: task A: unknown status 'READY ISH'")
    assert problems[1] == "b.md:4: task B: status '🔵' has no status word"


def test_invalid_fields_are_readable_not_pydantic_dumps() -> None:
    text = md(
        """
        | ID | Task | Capabilities | Est | Priority | Kind | Budget |
        |----|------|--------------|-----|----------|------|--------|
        | bad id | a | | | | | |
        | B |  | | | | | |
        | C | c | Python, ok:fine | | | | |
        | D | d | | two hours | high | urgent | ten |
        | E | e | | | | | |
        """
    )
    problems = problems_of(text + "| F | f | x | 1h |\n")
    assert problems == [
        "b.md:3: task bad id: invalid task id 'bad id': ids are 1-128 letters, digits or . _ - : @ + = ~",
        "b.md:4: task B: the title is empty",
        "b.md:5: task C: invalid capability 'Python': capabilities are lowercase words, "
        "optionally namespaced as domain:skill",
        "b.md:6: task D: cannot read estimate 'two hours' (expected hours or minutes, like 1.5h or 30m)",
        "b.md:6: task D: priority 'high' is not a whole number",
        "b.md:6: task D: kind 'urgent' is neither 'critical' nor 'filler'",
        "b.md:6: task D: cannot read budget 'ten' (expected dollars, like $2.50)",
        "b.md:8: task F: row has 4 cells but the header has 7 (an unescaped '|' in a cell?)",
    ]
    for problem in problems:
        assert "pydantic" not in problem and "type=" not in problem


def test_listed_twice_dependency() -> None:
    assert problems_of(HEADER + "| A | a | | |\n| B | b | | A, A |\n") == [
        "b.md:4: task B: dependency A is listed twice"
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = (
        HEADER
        + "| A | a | NOPE | |\n| A | a | | |\n| B | b | | Z |\n| C | c | | C |\n| D | d | | bogus text |\n"
    )
    problems = problems_of(text)
    assert [p.split(":")[1] for p in problems] == ["3", "4", "5", "6", "7"]


def test_table_problems() -> None:
    assert problems_of("| ID | Status |\n|--|--|\n| A | DONE |\n") == [
        "b.md:1: task table has no Task/Title column"
    ]
    assert problems_of("| ID | Task | Deps | Depends on |\n|--|--|--|--|\n| A | a | | |\n") == [
        "b.md:1: columns 'Deps' and 'Depends on' both give the dependencies"
    ]
    assert problems_of("# Notes\n\nno tables here\n") == [
        "b.md: no task table found (a markdown table whose header row has an ID column)"
    ]
    assert problems_of(HEADER + "|  | a | | |\n") == ["b.md:3: row has no task id"]


def test_duplicate_details_sections() -> None:
    text = HEADER + "| A | a | | |\n\n### A: a\n\n**Description:** one\n\n### A: a\n\n**Description:** two\n"
    assert problems_of(text) == ["b.md:9: task A: details given twice (lines 5 and 9)"]


# --------------------------------------------------------------------------- YAML and JSON

YAML_BOARD = md(
    """
    version: 1
    tasks:
      - id: P0.1.1
        title: Setup event bus
        description: Create the event bus
        acceptance_criteria: [connects, reconnects]
        estimate_hours: 1
        model: Haiku
        section: Bus
        status: available
        owner: alice
      - id: P0.1.2
        title: Atomic claims
        dependencies: [P0.1.1]
        capabilities: [python, infra:distributed-systems]
        estimate_hours: "1h 30m"
        budget_micros: 2500000
        status: 🔵 AVAILABLE
      - id: F1.1
        title: Improve docs
        kind: filler
        priority: 3
    """
)


def test_yaml_board() -> None:
    board = parse_board(YAML_BOARD, "board.yaml")
    assert board.fmt == "yaml"
    a, b, f = board.tasks
    assert a.acceptance_criteria == ["connects", "reconnects"]
    assert a.estimate_hours == Decimal(1) and a.section == "Bus"
    assert b.dependencies == ["P0.1.1"]
    assert b.estimate_hours == Decimal("1.5")
    assert b.budget_micros == 2_500_000
    assert f.kind == TaskKind.FILLER and f.priority == 3
    assert board.statuses == {"P0.1.1": TaskStatus.AVAILABLE, "P0.1.2": TaskStatus.AVAILABLE}
    assert board.owners == {"P0.1.1": "alice"}
    assert board.lines == {"P0.1.1": 3, "P0.1.2": 12, "F1.1": 19}
    assert board.warnings == [
        "board.yaml:12: task P0.1.2: P0.1.2 is marked AVAILABLE but depends on P0.1.1, which is not completed"
    ]


def test_yaml_errors_name_task_field_and_line() -> None:
    text = md(
        """
        version: 2
        tasks:
          - id: A
            title: a
            colour: red
            dependencies: [B]
          - id: B
            title: b
            title: again
            status: sleeping
          - title: no id
          - just a string
          - id: C
            title: c
            estimate_hours: a while
          - {id: E, title: e, dependencies: [E, Z]}
        extra: 1
        """
    )
    problems = problems_of(text, fmt="yaml", source="b.yaml")
    assert problems == [
        "b.yaml:1: unsupported board version 2 (this reader knows version 1)",
        "b.yaml:5: task A: unknown field 'colour'",
        "b.yaml:9: task B: field 'title' is given twice",
        problems[3],
        "b.yaml:11: task #3: missing required field 'id'",
        "b.yaml:12: task #4 is not a mapping of fields",
        problems[6],
        "b.yaml:16: task E: depends on itself",
        "b.yaml:16: task E: depends on unknown task 'Z'",
        "b.yaml:17: unknown top-level field 'extra' (expected 'version', 'tasks' and 'branch_prefix')",
    ]
    assert problems[3].startswith("b.yaml:10: task B: unknown status 'SLEEPING'")
    assert problems[6].startswith("b.yaml:15: task C: cannot read estimate 'a while'")


def test_yaml_cycle_and_duplicate() -> None:
    text = "tasks:\n- {id: A, title: a, dependencies: [B]}\n- {id: B, title: b, dependencies: [A]}\n"
    assert problems_of(text + "- {id: A, title: a2}\n", fmt=None, source="b.yml") == [
        "b.yml:2: task A: dependency cycle A -> B -> A (each depends on the next)",
        "b.yml:4: task A: duplicate task id (first defined at line 2)",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tasks:\n  - id: A\n    title: [unclosed\n", "b.yaml:4: not valid YAML: expected ',' or ']'"),
        ("- id: A\n", "b.yaml:1: the board must be a mapping with a 'tasks' list"),
        ("version: 1\n", "b.yaml: the board has no 'tasks' list"),
        ("tasks:\n  - id: A\n    title: a\n    priority: high\n", "b.yaml:2: task A: priority: input should"),
    ],
)
def test_yaml_document_problems(text: str, problem: str) -> None:
    problems = problems_of(text, fmt="yaml", source="b.yaml")
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_json_board_and_its_line_numbers() -> None:
    data: dict[str, Any] = {
        "version": 1,
        "tasks": [
            {"id": "A", "title": "a", "estimate_hours": 0.5},
            {"id": "B", "title": "b", "dependencies": ["A"], "status": "blocked"},
        ],
    }
    board = parse_board(json.dumps(data, indent=2), "board.json")
    assert board.fmt == "json"
    assert board.get("A").estimate_hours == Decimal("0.5")
    assert board.lines == {"A": 4, "B": 9}
    assert board.statuses == {"B": TaskStatus.BLOCKED}
    assert board.warnings == []

    data["tasks"].append({"id": "C", "title": "c", "shape": "round", "dependencies": ["C"]})
    problems = problems_of(json.dumps(data, indent=2), fmt=None, source="board.json")
    # C is left out of the graph checks (its self-dependency) because of its unknown field
    assert problems == ["board.json:20: task C: unknown field 'shape'"]


def test_json_errors() -> None:
    assert problems_of('{"tasks": [{"id": "A", "title": "a"', fmt="json") == [
        "b.md:1: not valid JSON: Expecting ',' delimiter (column 36)"
    ]
    text = (
        '{"tasks": [{"id": "A", "title": "a", "dependencies": ["Q"]},\n'
        '{"id": "B", "title": "b", "title": "c"}]}'
    )
    assert problems_of(text, fmt="json") == [
        "b.md:1: task A: depends on unknown task 'Q'",
        "b.md:2: task B: field 'title' is given twice",
    ]


def test_format_guessing() -> None:
    yaml_text = "tasks:\n  - id: A\n    title: a\n"
    json_text = '{"tasks": [{"id": "A", "title": "a"}]}'
    md_text = "| ID | Task |\n|--|--|\n| A | a |\n"
    assert parse_board(yaml_text).fmt == "yaml"
    assert parse_board(json_text).fmt == "json"
    assert parse_board(md_text).fmt == "md"
    assert parse_board(json_text, source="b.yml").fmt == "yaml"  # the suffix decides (JSON is YAML)
    assert parse_board(md_text, source="board.markdown").fmt == "md"
    assert parse_board(yaml_text, fmt="YML").fmt == "yaml"
    with pytest.raises(BoardError, match="unknown board format 'toml'"):
        parse_board(md_text, fmt="toml")


def test_docs_examples_parse() -> None:
    text = DOCS.read_text(encoding="utf-8")
    blocks: dict[str, list[str]] = {"markdown": [], "yaml": [], "json": []}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        lang = lines[i][3:].strip()
        if lines[i].startswith("```") and lang in blocks:
            end = lines.index("```", i + 1)
            blocks[lang].append("\n".join(lines[i + 1 : end]))
            i = end
        i += 1
    (md_example,) = blocks["markdown"]
    (yaml_example,) = blocks["yaml"]
    (json_example,) = blocks["json"]
    board = parse_board(md_example, "example.md")
    assert board.ids == ["P0.1.1", "P0.1.2", "P0.1.3", "F1.1"]
    assert board.get("P0.1.3").dependencies == ["P0.1.1", "P0.1.2"]
    assert len(board.get("P0.1.1").acceptance_criteria) == 2
    assert parse_board(yaml_example, "example.yaml").ids == ["P0.1.1", "P0.1.2", "F1.1"]
    assert parse_board(json_example, "example.json").ids == ["P0.1.1", "P0.1.2", "F1.1"]


# --------------------------------------------------------------------------- files


def test_load_board_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope.md"
    with pytest.raises(BoardError) as info:
        load_board(missing)
    assert info.value.problems[0].startswith(f"{missing}: cannot read the board")

    binary = tmp_path / "board.md"
    binary.write_bytes(b"| ID | Task |\n|--|--|\n| A | \xff\xfe |\n")
    with pytest.raises(BoardError) as info:
        load_board(binary)
    assert info.value.problems == [f"{binary}:3: the board is not UTF-8 text (byte 28)"]

    with pytest.raises(BoardError, match="cannot read the board"):
        load_board(tmp_path)

    good = tmp_path / "board.yaml"
    good.write_text("tasks:\n  - {id: A, title: a}\n", encoding="utf-8")
    assert load_board(good).fmt == "yaml"


def test_crlf_and_bom_are_accepted() -> None:
    text = "\ufeff| ID | Task | Deps |\r\n|--|--|--|\r\n| A | a | |\r\n| B | b | A |\r\n"
    board = parse_board(text)
    assert board.get("B").dependencies == ["A"]
    assert board.lines["B"] == 4


# --------------------------------------------------------------------------- topological order


def test_topological_order_is_deterministic() -> None:
    tasks = [
        TaskSpec(id="d", title="d", dependencies=["b", "c"]),
        TaskSpec(id="c", title="c", dependencies=["a"]),
        TaskSpec(id="b", title="b"),
        TaskSpec(id="a", title="a"),
        TaskSpec(id="e", title="e", dependencies=["outside"]),
    ]
    assert topological_order(tasks) == ["b", "a", "c", "d", "e"]


def test_topological_order_rejects_cycles_and_duplicates() -> None:
    cyclic = [
        TaskSpec(id="a", title="a", dependencies=["b"]),
        TaskSpec(id="b", title="b", dependencies=["a"]),
        TaskSpec(id="c", title="c", dependencies=["c"]),
    ]
    with pytest.raises(BoardError) as info:
        topological_order(cyclic)
    assert info.value.problems == [
        "task c: depends on itself",
        "task a: dependency cycle a -> b -> a (each depends on the next)",
    ]
    with pytest.raises(BoardError, match="duplicate task id"):
        topological_order([TaskSpec(id="a", title="a"), TaskSpec(id="a", title="b")])


def test_topological_order_on_a_shuffled_board(seed: Board) -> None:
    tasks = list(seed.tasks)
    random.Random(7).shuffle(tasks)
    order = topological_order(tasks)
    placed: set[str] = set()
    for task_id in order:
        assert set(seed.get(task_id).dependencies) <= placed
        placed.add(task_id)
    assert sorted(order) == sorted(seed.ids)


# --------------------------------------------------------------------------- export and round trips


def test_markdown_round_trip_of_the_seed(seed: Board) -> None:
    exported = export_markdown(seed.tasks)
    again = parse_board(exported, "export.md")
    assert again.tasks == seed.tasks
    assert again.statuses == {}
    assert "All above" not in exported
    # the filler tables look like the seed's
    assert "| ID | Task | Description | Est |" in exported
    assert "## Session 1 (NDI) Filler Tasks" in exported


def test_markdown_export_shows_live_status_and_owners(seed: Board) -> None:
    live = {t.id: TaskStatus.BLOCKED if t.dependencies else TaskStatus.AVAILABLE for t in seed.tasks}
    live["P0.1.1"] = TaskStatus.CLAIMED
    exported = export_markdown(seed.tasks, live, owners={"P0.1.1": "swarm-1"})
    assert "| P0.1.1 | Setup etcd/NATS event bus | 🟡 CLAIMED | swarm-1 | None |" in exported
    again = parse_board(exported)
    assert again.tasks == seed.tasks
    assert again.statuses == live
    assert again.owners == {"P0.1.1": "swarm-1"}
    assert not any("is marked" in w for w in again.warnings)  # the live statuses are consistent


@pytest.mark.parametrize("export", [export_json, export_yaml])
def test_structured_round_trip_of_the_seed(seed: Board, export: Callable[[Sequence[TaskSpec]], str]) -> None:
    text = export(seed.tasks)
    assert parse_board(text).tasks == seed.tasks


def test_cross_format_round_trip(seed: Board) -> None:
    via_yaml = parse_board(export_yaml(seed.tasks), "x.yaml")
    via_md = parse_board(export_markdown(via_yaml.tasks), "x.md")
    via_json = parse_board(export_json(via_md.tasks), "x.json")
    assert via_json.tasks == seed.tasks


def test_export_json_writes_only_non_default_fields() -> None:
    tasks = [
        TaskSpec(id="A", title="a"),
        TaskSpec(id="B", title="b", estimate_hours=Decimal(1) / Decimal(3), budget_micros=5),
    ]
    data = json.loads(export_json(tasks))
    assert data == {
        "version": 1,
        "tasks": [
            {"id": "A", "title": "a"},
            # estimates are kept to 6 decimals (a third of an hour is 0.333333 h)
            {"id": "B", "title": "b", "estimate_hours": 0.333333, "budget_micros": 5},
        ],
    }
    assert parse_board(export_json(tasks)).tasks == tasks
    assert parse_board(export_yaml(tasks)).tasks == tasks
    assert parse_board(export_markdown(tasks)).tasks == tasks
    assert yaml.safe_load(export_yaml(tasks))["version"] == 1


def test_markdown_round_trip_keeps_odd_sections_and_kinds() -> None:
    tasks = [
        TaskSpec(id="A", title="a | pipe", kind=TaskKind.FILLER),
        TaskSpec(id="B", title="b", section="Filler Tasks", kind=TaskKind.CRITICAL, dependencies=["A"]),
        TaskSpec(id="C", title="c", section="Main", description="one", acceptance_criteria=["x", "y"]),
        TaskSpec(id="D", title="d", description="two"),
        TaskSpec(id="E", title="e", section="Main", capabilities=["python", "a:b"], priority=2),
    ]
    assert parse_board(export_markdown(tasks)).tasks == tasks


# a random DAG, exported in each format and read back

_WORD = st.text(
    alphabet="*#-_:[]\\abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,()/<>'`!?&|",
    min_size=1,
)
_TEXT = (
    st.lists(_WORD, min_size=1, max_size=5)
    .map(" ".join)
    .filter(lambda s: s.lower() not in {"-", "--", "none", "n/a"})
)
_ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\-:@+=~]{0,11}", fullmatch=True).filter(
    lambda s: s.lower() not in {"none", "n/a"}
)
_CAPABILITY = st.from_regex(r"[a-z][a-z0-9_.\-]{0,6}(:[a-z][a-z0-9]{0,5})?", fullmatch=True)
_ESTIMATE = st.sampled_from([None, Decimal("0.25"), Decimal(1), Decimal("1.5"), Decimal(20) / Decimal(60)])


@st.composite
def _boards(draw: st.DrawFn) -> tuple[list[TaskSpec], dict[str, TaskStatus], dict[str, str]]:
    ids = draw(st.lists(_ID, min_size=1, max_size=10, unique=True))
    specs: list[TaskSpec] = []
    for i, task_id in enumerate(ids):
        deps = draw(st.lists(st.sampled_from(ids[:i]), unique=True, max_size=4)) if i else []
        specs.append(
            TaskSpec(
                id=task_id,
                title=draw(_TEXT),
                description=draw(st.one_of(st.just(""), _TEXT)),
                acceptance_criteria=draw(st.lists(_TEXT, max_size=3)),
                dependencies=deps,
                capabilities=draw(st.lists(_CAPABILITY, max_size=3)),
                kind=draw(st.sampled_from(list(TaskKind))),
                priority=draw(st.integers(-3, 3)),
                estimate_hours=draw(_ESTIMATE),
                model=draw(st.one_of(st.none(), _TEXT)),
                deliverable=draw(st.one_of(st.none(), _TEXT.filter(lambda s: "`" not in s))),
                budget_micros=draw(st.one_of(st.none(), st.integers(0, 10**10))),
                section=draw(st.sampled_from([None, "Core Work", "Session 1 Filler Tasks", "Docs"])),
            )
        )
    order = draw(st.permutations(specs))
    statuses = draw(st.dictionaries(st.sampled_from(ids), st.sampled_from(list(TaskStatus)), max_size=5))
    owners = draw(st.dictionaries(st.sampled_from(ids), _ID, max_size=3))
    return list(order), statuses, owners


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_boards())
def test_random_dags_round_trip(board: tuple[list[TaskSpec], dict[str, TaskStatus], dict[str, str]]) -> None:
    tasks, statuses, owners = board
    from_md = parse_board(export_markdown(tasks, statuses, owners=owners), "r.md")
    assert from_md.tasks == tasks
    assert from_md.statuses == statuses
    assert from_md.owners == owners
    assert parse_board(export_json(tasks), "r.json").tasks == tasks
    assert parse_board(export_yaml(tasks), "r.yaml").tasks == tasks
    order = topological_order(tasks)
    assert sorted(order) == sorted(t.id for t in tasks)
