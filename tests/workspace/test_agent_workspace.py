"""[4/9] The workspace through MCP (the SDK's in-memory client) and the
pieces of the tool guard that need no bus: what it reads from each client's
tool call, and the hook configuration that installs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from infrafabric.agent import AgentSession, build_server
from infrafabric.agent.clients import hook_config
from infrafabric.agent.hooks import HookInputError
from infrafabric.agent.toolguard import targets
from infrafabric.bus import connect
from infrafabric.coordinator import TaskStatus
from infrafabric.fleet import assemble
from support import git, init_repo

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    top = init_repo(tmp_path / "repo", {"src/a.py": "a = 1\n"})
    monkeypatch.chdir(top)  # the agent's server runs in its project
    return top


async def call(c: Client, tool: str, **args: Any) -> Any:
    result = await c.call_tool(tool, args)
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)  # type: ignore[union-attr]


async def test_task_next_makes_the_worktree_and_completion_reports_the_head(repo: Path, tmp_path: Path,
                                                                            namespace: str) -> None:
    async with connect(f"memory://?namespace={namespace}") as bus:
        fleet = assemble(bus, signer=None)
        await fleet.coordinator.create_tasks([{"id": "P1", "title": "parser", "paths": ["src/**"],
                                               "branch": "feat/parser"}])
        await fleet.register_swarm("coder", [])
        session = AgentSession(fleet, "coder")

        async def session_for() -> AgentSession:
            return session

        async with Client(build_server(session_for)) as c:
            (tmp_path / "a-file").write_text("x")
            bad = await c.call_tool("task_next", {"wait_s": 0, "workspace": str(tmp_path / "a-file")})
            assert bad.is_error and "not a directory" in bad.content[0].text  # type: ignore[union-attr]
            assert (await fleet.coordinator.get_task("P1")).status is TaskStatus.AVAILABLE  # nothing claimed
            got = await call(c, "task_next", wait_s=0, workspace="../wt")
            ws = got["workspace"]
            tree = Path(ws["path"])
            assert tree == tmp_path / "wt" / "P1" and ws["branch"] == "feat/parser"
            assert git("branch", "--show-current", cwd=tree) == "feat/parser"
            assert str(tree) in got["next"]
            again = await call(c, "task_next", wait_s=0, workspace="../wt")  # already held: the same worktree
            assert again["already_held"] and again["workspace"]["path"] == ws["path"]
            (tree / "src" / "a.py").write_text("a = 2\n")
            git("commit", "-qam", "a 2", cwd=tree)
            done = await call(c, "task_complete", task_id="P1", summary="parsed")
            assert done["branch"] == "feat/parser" and done["head"] == git("rev-parse", "HEAD", cwd=tree)
        task = await fleet.coordinator.get_task("P1")
        assert task.result == {"branch": "feat/parser", "head": done["head"], "summary": "parsed"}


@pytest.mark.parametrize(("agent", "tool", "tool_input", "paths", "branches"), [
    ("claude", "Edit", {"file_path": "/r/a.py", "old_string": "a", "new_string": "b"}, ["/r/a.py"], []),
    ("claude", "Write", {"file_path": "docs/x.md", "content": ""}, ["docs/x.md"], []),
    ("claude", "NotebookEdit", {"notebook_path": "/r/n.ipynb", "new_source": ""}, ["/r/n.ipynb"], []),
    ("claude", "Read", {"file_path": "/r/src/a.py"}, [], []),
    ("claude", "Bash", {"command": "git switch if/T1"}, [], ["if/T1"]),
    ("claude", "Bash", {"command": "cd x && GIT_TRACE=0 git -C .. checkout feat/y; ls"}, [], ["feat/y"]),
    ("claude", "Bash", {"command": "git checkout -b new && git switch -c other"}, [], []),
    ("claude", "Bash", {"command": "git checkout main -- src/a.py src/b.py"}, ["src/a.py", "src/b.py"], []),
    ("claude", "Bash", {"command": "git restore -s main src/a.py"}, ["src/a.py"], []),
    ("codex", "apply_patch", {"command": ["apply_patch", "*** Begin Patch\n*** Add File: n/x.py\n+x\n"
                                          "*** Update File: o/y.py\n*** Move to: o/z.py\n*** End Patch"]},
     ["n/x.py", "o/y.py", "o/z.py"], []),
    ("codex", "Bash", {"command": ["bash", "-lc", "git switch if/T2"]}, [], ["if/T2"]),
])
def test_what_the_tool_guard_reads_from_a_call(agent: str, tool: str, tool_input: dict[str, Any],
                                               paths: list[str], branches: list[str]) -> None:
    assert targets(agent, {"tool_name": tool, "tool_input": tool_input}) == (paths, branches)


def test_a_call_without_what_it_edits_is_bad_input() -> None:
    with pytest.raises(HookInputError, match="file_path"):
        targets("claude", {"tool_name": "Edit", "tool_input": {"file_path": 3}})
    with pytest.raises(HookInputError, match="tool_name"):
        targets("claude", {"tool_input": {}})


def test_hooks_install_puts_the_tool_guard_before_edits() -> None:
    for agent, matcher in (("claude", "Edit|Write|MultiEdit|NotebookEdit|Bash"),
                           ("codex", "apply_patch|Bash")):
        config = hook_config(agent, {}, "ifctl", "s1")
        (entry,) = config["hooks"]["PreToolUse"]
        assert entry["matcher"] == matcher
        assert entry["hooks"][0]["command"] == f"ifctl guard tool --agent {agent} --swarm s1"
        again = hook_config(agent, config, "ifctl", "s1")
        assert again == config  # installing twice changes nothing
    assert "preToolUse" not in hook_config("cursor", {}, "ifctl", None)["hooks"]


def test_the_guards_branch_reader_agrees_with_git(repo: Path, tmp_path: Path) -> None:
    from infrafabric.statedir import checked_out_branch

    git("worktree", "add", "-q", "-b", "if/T1", str(tmp_path / "wt"), cwd=repo)
    (tmp_path / "wt" / "deep").mkdir()
    assert checked_out_branch(repo) == git("symbolic-ref", "--short", "HEAD", cwd=repo) == "main"
    assert checked_out_branch(tmp_path / "wt" / "deep") == "if/T1"
    git("checkout", "-q", "--detach", cwd=tmp_path / "wt")
    assert checked_out_branch(tmp_path / "wt") is None
    assert checked_out_branch(tmp_path) is None  # outside any repository
