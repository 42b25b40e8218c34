"""[4/9], first slice: tasks declare the paths they touch and the branch their
work goes on, in every board format and from the CLI; bad patterns and branch
names git would refuse are named and change nothing. Branch rules are checked
against the real git binary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrafabric.coordinator.board import export_json, export_markdown, export_yaml, parse_board
from infrafabric.coordinator.models import TASK_ID_PATTERN, TaskSpec, check_branch, default_branch
from infrafabric.errors import BoardError

IFCTL = str(Path(sys.executable).parent / "ifctl")

MARKDOWN = """\
| ID | Task | Dependencies | Paths | Branch |
|----|------|--------------|-------|--------|
| W1 | Parser | None | `src/parser/**`, `tests/test_parser.py` | `feat/parser` |
| W2 | Docs | W1 | ./docs/*.md | - |
"""


def git_accepts(name: str) -> bool:
    return subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True).returncode == 0


def test_paths_and_branches_in_every_format_and_back() -> None:
    board = parse_board(MARKDOWN, "board.md")
    w1, w2 = board.get("W1"), board.get("W2")
    assert w1.paths == ["src/parser/**", "tests/test_parser.py"] and w1.branch == "feat/parser"
    assert w2.paths == ["docs/*.md"] and w2.branch is None and w2.work_branch == "if/W2"
    for text, fmt in ((export_yaml(board.tasks), "yaml"), (export_json(board.tasks), "json"),
                      (export_markdown(board.tasks), "md")):
        again = parse_board(text, f"again.{fmt}", fmt)
        assert [(t.id, t.paths, t.branch) for t in again.tasks] == [
            (t.id, t.paths, t.branch) for t in board.tasks]


@pytest.mark.parametrize(("paths", "branch", "says"), [
    (["/etc/passwd"], None, "is absolute"),
    (["../other-repo/x"], None, "has an empty or .. part"),
    (["src//x"], None, "has an empty or .. part"),
    (["src\\x"], None, "backslash"),
    (["src/[ab"], None, "unbalanced"),
    ([], "feat branch", "git refuses"),
    ([], "x.lock", "ends with .lock"),
    ([], "-x", "starts with -"),
])
def test_bad_paths_and_branches_are_named(paths: list[str], branch: str | None, says: str) -> None:
    task = {"id": "B1", "title": "bad", "paths": paths, **({"branch": branch} if branch else {})}
    with pytest.raises(BoardError) as caught:
        parse_board(json.dumps({"tasks": [task]}), "board.json")
    assert says in str(caught.value) and "B1" in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(TASK_ID_PATTERN, fullmatch=True))
def test_every_task_ids_default_branch_is_one_git_accepts(task_id: str) -> None:
    assert git_accepts(default_branch(task_id))


@pytest.mark.parametrize("name", ["feat/x", "a b", "a..b", "x.lock", "-x", "ok-1", "a/.b", "a//b", "a@{b",
                                  "é", "a/b/c", "trailing.", "trailing/", "a?b", "a*b", "a[b", "a\\b",
                                  "a:b", "a~b", "a^b", "ctrl\x01"])
def test_branch_rules_agree_with_git(name: str) -> None:
    try:
        check_branch(name)
        ours = True
    except ValueError:
        ours = False
    assert ours == git_accepts(name)


def test_task_create_takes_paths_and_a_branch_and_refuses_bad_ones(nats_server: object,
                                                                   tmp_path: Path) -> None:
    url = f"{nats_server.url}?namespace=ws{os.getpid()}"  # type: ignore[attr-defined]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | {"IF_BUS_URL": url,
                                                                             "IF_HOME": str(tmp_path)}

    def ifctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([IFCTL, *args], env=env, capture_output=True, text=True, timeout=60)

    made = ifctl("task", "create", "C1", "--title", "parser", "--path", "src/parser/**",
                 "--path", "./docs/p.md", "--branch", "feat/parser")
    assert made.returncode == 0, made.stderr
    shown = json.loads(ifctl("task", "show", "C1", "--json").stdout)
    assert shown["paths"] == ["src/parser/**", "docs/p.md"] and shown["branch"] == "feat/parser"
    for args, says in ((["--path", "../x"], "paths"), (["--branch", "a..b"], "branch")):
        bad = ifctl("task", "create", "C2", "--title", "bad", *args)
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr
    assert ifctl("task", "show", "C2").returncode != 0  # nothing was written


def test_a_task_without_paths_reads_as_before() -> None:
    assert TaskSpec.model_validate({"id": "Old", "title": "an older record"}).paths == []


def test_a_board_may_set_its_branch_prefix() -> None:
    board = parse_board("branch_prefix: feat/\ntasks:\n  - {id: 'A:1', title: a}\n"
                        "  - {id: B, title: b, branch: hotfix/b}\n", "board.yaml")
    assert [t.work_branch for t in board.tasks] == ["feat/A-1", "hotfix/b"]
    with pytest.raises(BoardError) as caught:
        parse_board('{"branch_prefix": "bad prefix/", "tasks": [{"id": "A", "title": "a"}]}', "board.json")
    assert "branch_prefix 'bad prefix/'" in str(caught.value)
