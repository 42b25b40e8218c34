"""[4/9] The workspace that goes with a claim, with real git repositories.

``--worktree`` makes the claimed task's worktree on its branch and completion
records the branch's head; a holder killed with SIGKILL hands its branch,
commits and last note to the next claimant; the pre-commit guard (run by
hand and installed as git's hook) and the PreToolUse tool guard (directly
and through the agent's running ``ifctl mcp``) refuse what another live
claim holds, naming holder and task, and allow the rest; bad input exits 2
and claims nothing; an unreachable bus lets the guards fail open, saying so.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from infrafabric.agent.control import socket_path
from infrafabric.bus import connect
from infrafabric.bus.servers import NatsServer
from infrafabric.coordinator import TaskStatus
from infrafabric.fleet import Fleet, assemble
from support import git, init_repo

pytestmark = [pytest.mark.engine, pytest.mark.timeout(180)]

IFCTL = str(Path(sys.executable).parent / "ifctl")
HOLDER = str(Path(__file__).with_name("holder.py"))
BOARD = [
    {"id": "api", "title": "rework the API", "paths": ["src/api/**"]},
    {"id": "docs", "title": "write the docs", "paths": ["docs/**"]},
]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", {"src/api/app.py": "app = 1\n", "docs/guide.md": "# guide\n"})


@pytest.fixture
def engine_url(nats_server: NatsServer, namespace: str) -> str:
    """NATS only: these tests are about git, the CLI and the hooks. What the engines must
    agree on (path leases, claims, a claimant killed between the two writes) is tested on
    memory, NATS and etcd in tests/coordinator/test_path_leases.py."""
    return f"{nats_server.url}?namespace={namespace}"


@pytest.fixture
def env(engine_url: str, tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("IF_")}
    return base | {"IF_BUS_URL": engine_url, "IF_HOME": str(tmp_path / "home")}


@pytest.fixture
async def fleet(engine_url: str) -> AsyncIterator[Fleet]:
    async with connect(engine_url) as bus:
        f = assemble(bus, signer=None)
        await f.coordinator.create_tasks(BOARD)
        for swarm in ("a", "b"):
            await f.register_swarm(swarm, [])
        yield f


def ifctl(*args: str, cwd: Path, env: dict[str, str], stdin: str | None = None,
          swarm: str | None = None) -> subprocess.CompletedProcess[str]:
    full = env | ({"IF_SWARM_ID": swarm} if swarm else {})
    return subprocess.run([IFCTL, *args], cwd=cwd, env=full, input=stdin, capture_output=True, text=True,
                          timeout=120)


def claim_both(repo: Path, env: dict[str, str]) -> None:
    for task, swarm in (("api", "a"), ("docs", "b")):
        got = ifctl("task", "claim", task, "--swarm", swarm, "--worktree", "../wt", cwd=repo, env=env)
        assert got.returncode == 0, got.stderr


async def test_worktree_on_the_tasks_branch_and_completion_records_its_head(
        fleet: Fleet, repo: Path, env: dict[str, str], tmp_path: Path) -> None:
    got = ifctl("task", "claim", "api", "--swarm", "a", "--worktree", "../wt", "--json", cwd=repo,
                env=env)
    assert got.returncode == 0, got.stderr
    ws = json.loads(got.stdout)["workspace"]
    tree = Path(ws["path"])
    assert tree == (tmp_path / "wt" / "api") and ws["branch"] == "if/api" and ws["created"]
    assert git("branch", "--show-current", cwd=tree) == "if/api"
    again = ifctl("task", "claim", "api", "--swarm", "a", "--worktree", "../wt", cwd=repo, env=env)
    assert again.returncode == 1  # already held: nothing made twice
    (tree / "src" / "api" / "app.py").write_text("app = 2\n")
    git("commit", "-q", "-am", "app 2", cwd=tree)
    head = git("rev-parse", "HEAD", cwd=tree)
    done = ifctl("task", "complete", "api", "--swarm", "a", "--result", '{"pr": 7}', "--json", cwd=repo,
                 env=env)
    assert done.returncode == 0, done.stderr
    task = await fleet.coordinator.get_task("api")
    assert task.workspace is not None and task.workspace.head == head and task.workspace.branch == "if/api"
    assert task.result == {"branch": "if/api", "head": head, "pr": 7}
    assert json.loads(done.stdout)["workspace"]["head"] == head


async def test_two_agents_racing_get_disjoint_work_in_parallel_never_overlapping_paths(
        engine_url: str, repo: Path, env: dict[str, str], tmp_path: Path) -> None:
    async with connect(engine_url) as bus:
        f = assemble(bus, signer=None)
        await f.coordinator.create_tasks([
            {"id": "wide", "title": "all of src", "paths": ["src/**"]},
            {"id": "api", "title": "the API", "paths": ["src/api/*.py"]},
            {"id": "docs", "title": "the docs", "paths": ["docs/**"]}])
        for swarm in ("a", "b"):
            await f.register_swarm(swarm, [])
        full = [env | {"IF_SWARM_ID": s} for s in ("a", "b")]
        procs = [subprocess.Popen([IFCTL, "task", "next", "--swarm", s, "--worktree", "../wt", "--json"],
                                  cwd=repo, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for s, e in zip(("a", "b"), full, strict=True)]
        outs = [await asyncio.to_thread(p.communicate, timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        got = {json.loads(out)["task_id"]: json.loads(out)["workspace"]["path"] for out, _ in outs}
        assert set(got) == {"wide", "docs"}, got  # api overlaps wide: skipped, never held beside it
        held = {lease.task_id for lease, _ in await f.coordinator.leases.held()}
        assert held == {"wide", "docs"}  # both at once: disjoint paths run in parallel
        for task_id, path in got.items():
            assert git("branch", "--show-current", cwd=Path(path)) == f"if/{task_id}"


async def test_a_killed_holders_branch_commits_and_note_go_to_the_next_claimant(
        fleet: Fleet, repo: Path, env: dict[str, str], tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, HOLDER, env["IF_BUS_URL"], "a", str(repo),
                               str(tmp_path / "wtA")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert holder.stdout is not None
    line = await asyncio.to_thread(holder.stdout.readline)
    assert line.strip() == "ready api", holder.stderr.read() if holder.poll() is not None else line
    theirs = git("rev-parse", "if/api", cwd=repo)
    assert (await fleet.coordinator.try_claim("a", "docs", lease_ttl=600)).won  # so b's next can only be api
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(10)
    got = ifctl("task", "next", "--swarm", "b", "--worktree", str(tmp_path / "wtB"), "--wait", "30", "--json",
                cwd=repo, env=env)
    assert got.returncode == 0, got.stderr
    data = json.loads(got.stdout)
    assert data["task_id"] == "api"  # once its lease lapsed
    ws = data["workspace"]
    tree = Path(ws["path"])
    assert ws["branch"] == "if/api" and ws["handed_over"] and ws["previous_holder"] == "a"
    assert ws["progress"] == "parser half done; lexer next"
    assert ws["head"] == theirs and any("half of the parser" in c for c in ws["commits"])
    assert (tree / "src" / "api" / "parser.py").read_text() == "def parse(): ...\n"  # their work, checked out
    human = ifctl("task", "show", "api", cwd=repo, env=env)
    assert "claimed" in human.stdout


async def test_pre_commit_guard_refuses_anothers_paths_and_allows_ones_own(
        fleet: Fleet, repo: Path, env: dict[str, str], tmp_path: Path) -> None:
    claim_both(repo, env)
    mine, theirs = tmp_path / "wt" / "docs", tmp_path / "wt" / "api"
    (mine / "src" / "api" / "app.py").write_text("trespass\n")
    git("add", "-A", cwd=mine)
    refused = ifctl("guard", "pre-commit", "--swarm", "b", cwd=mine, env=env)
    assert refused.returncode == 1
    assert "src/api/app.py is leased by a for task api" in refused.stdout, refused.stdout
    as_json = json.loads(ifctl("guard", "pre-commit", "--swarm", "b", "--json", cwd=mine, env=env).stdout)
    assert as_json["allowed"] is False and as_json["checked"] is True
    git("reset", "-q", "--hard", cwd=mine)
    (mine / "docs" / "guide.md").write_text("# better guide\n")
    git("add", "-A", cwd=mine)
    assert ifctl("guard", "pre-commit", "--swarm", "b", cwd=mine, env=env).returncode == 0
    # in a's own worktree its task's paths are its own, with or without --swarm
    (theirs / "src" / "api" / "app.py").write_text("app = 3\n")
    git("add", "-A", cwd=theirs)
    assert ifctl("guard", "pre-commit", cwd=theirs, env=env).returncode == 0
    # a zombie of b committing on a's branch is refused: the branch is a's claim
    zombie = ifctl("guard", "pre-commit", "--swarm", "b", cwd=theirs, env=env)
    assert zombie.returncode == 1 and "branch if/api is held by a for task api" in zombie.stdout
    # installed as git's hook: git itself refuses the trespassing commit
    inst = ifctl("guard", "install", "--swarm", "b", cwd=mine, env=env)
    assert inst.returncode == 0, inst.stderr
    (mine / "src" / "api" / "app.py").write_text("trespass\n")
    git("add", "-A", cwd=mine)
    commit = subprocess.run(["git", "commit", "-qm", "x"], cwd=mine, env=env, capture_output=True, text=True)
    assert commit.returncode != 0 and "leased by a for task api" in commit.stdout + commit.stderr
    git("reset", "-q", "--hard", cwd=mine)
    (mine / "docs" / "guide.md").write_text("# best guide\n")
    git("commit", "-qam", "docs", cwd=mine)  # its own paths commit through the hook


def tool_payload(agent: str, tool: str, tool_input: dict[str, Any], cwd: Path) -> str:
    base: dict[str, Any] = {"session_id": "s", "transcript_path": None, "cwd": str(cwd),
                            "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": tool_input}
    if agent == "codex":
        base |= {"model": "gpt-5", "permission_mode": "default", "turn_id": "t", "tool_use_id": "c"}
    return json.dumps(base)


def denial(done: subprocess.CompletedProcess[str]) -> str | None:
    assert done.returncode == 0, done.stderr
    if not done.stdout.strip():
        return None
    out = json.loads(done.stdout)["hookSpecificOutput"]
    assert out["hookEventName"] == "PreToolUse" and out["permissionDecision"] == "deny"
    return str(out["permissionDecisionReason"])


@pytest.fixture(params=["server", "direct"])
async def via(request: pytest.FixtureRequest, env: dict[str, str], repo: Path) -> AsyncIterator[str]:
    """The tool guard asks b's running `ifctl mcp` ("server"), or the bus when none runs ("direct")."""
    if request.param == "direct":
        yield "direct"
        return
    proc = subprocess.Popen([IFCTL, "mcp"], cwd=repo, env=env | {"IF_SWARM_ID": "b"}, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sock = socket_path("b", env["IF_HOME"])
    try:
        for _ in range(300):
            if sock.exists() or proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert sock.exists(), "no socket"
        yield "server"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0


async def test_tool_guard_refuses_edits_and_checkouts_of_anothers_claim(
        fleet: Fleet, repo: Path, env: dict[str, str], tmp_path: Path, via: str) -> None:
    claim_both(repo, env)
    mine = tmp_path / "wt" / "docs"

    def ask(agent: str, tool: str, **tool_input: Any) -> str | None:
        return denial(ifctl("guard", "tool", "--agent", agent, cwd=mine, env=env, swarm="b",
                            stdin=tool_payload(agent, tool, tool_input, mine)))

    reason = ask("claude", "Edit", file_path=str(mine / "src/api/app.py"), old_string="a", new_string="b")
    assert reason is not None and "src/api/app.py is leased by a for task api" in reason
    assert ask("claude", "Write", file_path=str(mine / "docs/new.md"), content="x") is None
    assert ask("claude", "Write", file_path="/etc/hostname", content="x") is None  # outside the repository
    branch = ask("claude", "Bash", command="git fetch && git checkout if/api")
    assert branch is not None and "branch if/api is held by a for task api" in branch
    assert ask("claude", "Bash", command="git switch if/docs") is None  # its own
    assert ask("claude", "Bash", command="git checkout -b mine") is None  # a new branch
    assert ask("claude", "Bash", command="git checkout HEAD -- src/api/app.py") is not None
    patch = "*** Begin Patch\n*** Update File: src/api/app.py\n@@\n-app = 1\n+app = 9\n*** End Patch\n"
    assert "leased by a for task api" in (ask("codex", "apply_patch", command=["apply_patch", patch]) or "")
    assert ask("codex", "Bash", command=["bash", "-lc", "ls"]) is None


async def test_bad_input_exits_2_and_claims_nothing(fleet: Fleet, repo: Path, env: dict[str, str],
                                                    tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for args in (["task", "claim", "api", "--swarm", "a", "--worktree", str(tmp_path / "afile")],
                 ["task", "next", "--swarm", "a", "--worktree", str(tmp_path / "afile")]):
        got = ifctl(*args, cwd=repo, env=env)
        assert got.returncode == 2 and "is a file" in got.stderr, got.stderr
    (tmp_path / "wt" / "api").mkdir(parents=True)
    squat = ifctl("task", "claim", "api", "--swarm", "a", "--worktree", str(tmp_path / "wt"), cwd=repo,
                  env=env)
    assert squat.returncode == 2 and "is not a worktree of" in squat.stderr
    outside = ifctl("task", "claim", "api", "--swarm", "a", "--worktree", "../wt2", cwd=tmp_path, env=env)
    assert outside.returncode == 2 and "not inside a git repository" in outside.stderr
    created = ifctl("task", "create", "x1", "--title", "x", "--path", "../elsewhere/**", cwd=repo, env=env)
    assert created.returncode == 2 and ".. part" in created.stderr
    bad_branch = ifctl("task", "create", "x2", "--title", "x", "--branch", "a..b", cwd=repo, env=env)
    assert bad_branch.returncode == 2 and "git refuses" in bad_branch.stderr
    assert {t.id: t.status for t in await fleet.coordinator.list_tasks()} == {
        "api": TaskStatus.AVAILABLE, "docs": TaskStatus.AVAILABLE}
    assert [h.to for h in (await fleet.coordinator.get_task("api")).history] == [TaskStatus.AVAILABLE]
    for raw, says in (("{nope", "not the JSON"), ("[]", "JSON object"),
                      (json.dumps({"hook_event_name": "PreToolUse"}), "tool_name"),
                      (json.dumps({"hook_event_name": "Stop", "tool_name": "Edit"}), "PreToolUse hook"),
                      (json.dumps({"tool_name": "Edit", "tool_input": {}}), "file_path")):
        got = ifctl("guard", "tool", cwd=repo, env=env, swarm="b", stdin=raw)
        assert got.returncode == 2 and says in got.stderr and "Traceback" not in got.stderr, got.stderr


def test_guards_fail_open_when_the_bus_is_unreachable_and_say_so(repo: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | {
        "IF_BUS_URL": "nats://127.0.0.1:9?timeout=0.5", "IF_HOME": str(tmp_path / "home")}
    got = ifctl("guard", "tool", cwd=repo, env=env, swarm="b",
                stdin=tool_payload("claude", "Edit", {"file_path": str(repo / "src/api/app.py")}, repo))
    assert got.returncode == 0 and got.stdout == "" and "unreachable" in got.stderr, got.stderr
    (repo / "docs" / "guide.md").write_text("changed\n")
    git("add", "-A", cwd=repo)
    pre = ifctl("guard", "pre-commit", "--swarm", "b", cwd=repo, env=env)
    assert pre.returncode == 0 and "unreachable" in pre.stderr, pre.stderr

