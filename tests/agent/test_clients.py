"""Setting up each client: ``ifctl hooks install`` (merged, idempotent, into
the right work tree, pinned to a named board) and ``ifctl mcp config``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

IFCTL = str(Path(sys.executable).parent / "ifctl")


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("IF_")} | (env or {})
    return subprocess.run([IFCTL, *args], cwd=cwd, env=base, capture_output=True, text=True, timeout=60)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "init"], check=True)
    return root


def test_install_merges_keeps_other_hooks_and_is_idempotent(repo: Path) -> None:
    settings = repo / ".claude" / "settings.json"
    settings.parent.mkdir()
    mine = {"type": "command", "command": "./lint.sh"}
    theirs = {"PostToolUse": [{"matcher": "Edit", "hooks": [mine]}]}
    settings.write_text(json.dumps({"model": "opus", "hooks": theirs}))
    assert run("hooks", "install", "--agent", "claude", cwd=repo / ".claude").returncode == 0
    first = json.loads(settings.read_text())
    assert first["model"] == "opus"
    assert first["hooks"]["PostToolUse"][0] == {"matcher": "Edit", "hooks": [mine]}
    commands = [h["command"] for groups in first["hooks"].values() for g in groups for h in g["hooks"]]
    assert sum("hook claude" in c for c in commands) == 4
    assert run("hooks", "install", "--agent", "claude", cwd=repo).returncode == 0
    assert json.loads(settings.read_text()) == first


def test_install_in_a_linked_worktree_writes_that_worktree_and_pins_a_named_board(repo: Path,
                                                                                 tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", str(wt)], check=True)
    home = tmp_path / "state"
    done = run("hooks", "install", "--agent", "cursor", cwd=wt, env={"IF_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert not (repo / ".cursor").exists()
    config = json.loads((wt / ".cursor" / "hooks.json").read_text())
    assert config["version"] == 1 and config["hooks"]["stop"][0]["loop_limit"] == 10
    assert all(f"--home {home}" in e["command"] for events in config["hooks"].values() for e in events)


def test_install_refuses_a_broken_file_and_leaves_it(repo: Path) -> None:
    hooks = repo / ".codex" / "hooks.json"
    hooks.parent.mkdir()
    hooks.write_text("{broken")
    done = run("hooks", "install", "--agent", "codex", cwd=repo)
    assert done.returncode == 2 and "not JSON" in done.stderr and "Traceback" not in done.stderr
    assert hooks.read_text() == "{broken"


@pytest.mark.parametrize(("agent", "says"), [("claude", "claude mcp add --transport stdio --scope local"),
                                             ("codex", "codex mcp add infrafabric"),
                                             ("cursor", "mcpServers"), ("gemini", "mcpServers")])
def test_mcp_config_prints_each_clients_registration(repo: Path, agent: str, says: str) -> None:
    done = run("mcp", "config", "--agent", agent, "--swarm", "s7", "--cap", "code:python", "--json", cwd=repo)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    text = data.get("command") or data["content"]
    assert says in text and "--swarm" in text and "s7" in text
    if agent == "codex":  # printed as is, not read as markup
        assert "[mcp_servers.infrafabric]" in run("mcp", "config", "--agent", agent, cwd=repo).stdout
    assert str(repo / ".git" / "infrafabric") in text  # IF_HOME: the project's board wherever it starts
    bad = run("mcp", "config", "--agent", agent, "--cap", "Not A Cap", cwd=repo)
    assert bad.returncode == 2 and "not a capability" in bad.stderr
