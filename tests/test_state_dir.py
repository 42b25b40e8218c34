"""One board per project: the state directory (and so the embedded bus) a command uses.

``--home``, else ``IF_HOME``, else ``<common git dir>/infrafabric`` anywhere in a git
repository (main work tree, linked worktrees, subdirectories), else the per-user
``${XDG_STATE_HOME:-$HOME/.local/state}/infrafabric``. Repositories are made with the
real ``git``, whose own ``rev-parse --git-common-dir`` is the oracle; the end-to-end
tests drive real ``ifctl`` processes and stop every embedded server they start.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infrafabric.bus.embedded import Embedded, describe_state_dir, git_common_dir, state_dir
from infrafabric.bus.servers import free_port, pid_alive
from infrafabric.cli.app import Settings

IFCTL = str(Path(sys.executable).with_name("ifctl"))
#: what selects the state directory or the bus; every test here sets what it needs itself
SELECTING = ("IF_BUS_URL", "IF_HOME", "XDG_STATE_HOME", "GIT_DIR", "GIT_COMMON_DIR", "GIT_WORK_TREE",
             "GIT_CEILING_DIRECTORIES", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without anything that selects a bus, a state
    directory or a git repository; ``HOME`` is ``home``."""
    env = {k: v for k, v in os.environ.items() if k not in SELECTING}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", **extra)
    return env


def git(*args: str, cwd: Path, home: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                           "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always", *args],
                          cwd=cwd, env={**clean_env(home), **(env or {})}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout.strip()


def git_says(cwd: Path, home: Path, env: dict[str, str] | None = None) -> Path:
    """git's own answer: the common git directory for ``cwd``."""
    return Path(git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=cwd, home=home,
                    env=env)).resolve()


@dataclass
class Repo:
    """A repository with one commit, a linked worktree ``wt2`` beside it and a subdirectory."""

    root: Path  # the main work tree
    wt2: Path  # a linked worktree (``git worktree add ../wt2``)
    home: Path  # HOME for git and ifctl; empty
    tmp: Path

    @property
    def common(self) -> Path:
        return (self.root / ".git").resolve()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "project"
    root.mkdir()
    git("init", "-q", cwd=root, home=home)
    (root / "docs" / "guide").mkdir(parents=True)
    (root / "docs" / "guide" / "README.md").write_text("# guide\n")
    git("add", ".", cwd=root, home=home)
    git("commit", "-q", "-m", "init", cwd=root, home=home)
    git("worktree", "add", "-q", "../wt2", cwd=root, home=home)
    return Repo(root=root, wt2=tmp_path / "wt2", home=home, tmp=tmp_path)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """This process's environment cleared of every selector (HOME is an empty tmp dir)."""
    for name in SELECTING:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "home").mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


# -- resolution -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", [".", "docs", "docs/guide"])
def test_main_work_tree_and_its_subdirectories_use_the_common_git_dir(
        repo: Repo, env: pytest.MonkeyPatch, where: str) -> None:
    env.chdir(repo.root / where)
    assert git_says(Path.cwd(), repo.home) == repo.common
    path, reason = describe_state_dir()
    assert path == repo.common / "infrafabric" == state_dir()
    assert reason == f"the git repository at {repo.root.resolve()}, shared by its worktrees"
    assert git_common_dir() == repo.common


@pytest.mark.parametrize("where", [".", "docs/guide"])
def test_a_linked_worktree_shares_the_main_trees_directory(
        repo: Repo, env: pytest.MonkeyPatch, where: str) -> None:
    assert (repo.wt2 / ".git").is_file()  # "gitdir: <common>/worktrees/wt2", which holds `commondir`
    env.chdir(repo.wt2 / where)
    assert git_says(Path.cwd(), repo.home) == repo.common
    assert describe_state_dir() == (repo.common / "infrafabric",
                                    f"the git repository at {repo.root.resolve()}, shared by its worktrees")


def test_a_submodule_has_its_own_directory(repo: Repo, env: pytest.MonkeyPatch) -> None:
    """A submodule's ``.git`` is a file naming ``../.git/modules/<name>`` (relative): a
    project of its own, with the state in that git directory."""
    other = repo.tmp / "other"
    other.mkdir()
    git("init", "-q", cwd=other, home=repo.home)
    git("commit", "-q", "--allow-empty", "-m", "other", cwd=other, home=repo.home)
    git("submodule", "add", "-q", str(other), "lib", cwd=repo.root, home=repo.home)
    gitfile = (repo.root / "lib" / ".git").read_text()
    assert gitfile.startswith("gitdir: ../.git/modules/lib"), gitfile
    env.chdir(repo.root / "lib")
    expected = (repo.root / ".git" / "modules" / "lib").resolve()
    assert git_says(Path.cwd(), repo.home) == expected
    path, reason = describe_state_dir()
    assert path == expected / "infrafabric"
    assert reason == f"the git repository at {expected}, shared by its worktrees"


def test_inside_the_git_directory_and_a_bare_repository(repo: Repo, env: pytest.MonkeyPatch) -> None:
    env.chdir(repo.root / ".git" / "refs")
    assert state_dir() == repo.common / "infrafabric" == git_says(Path.cwd(), repo.home) / "infrafabric"
    bare = repo.tmp / "bare.git"
    git("clone", "-q", "--bare", str(repo.root), str(bare), cwd=repo.tmp, home=repo.home)
    env.chdir(bare)
    assert git_says(bare, repo.home) == bare.resolve()
    assert describe_state_dir() == (bare.resolve() / "infrafabric",
                                    f"the git repository at {bare.resolve()}, shared by its worktrees")


def test_git_dir_and_git_common_dir_are_honoured(repo: Repo, env: pytest.MonkeyPatch) -> None:
    elsewhere = repo.tmp / "elsewhere"
    elsewhere.mkdir()
    env.chdir(elsewhere)
    assert git_common_dir() is None
    # GIT_DIR naming a linked worktree's git directory: its commondir leads to the main one
    worktree_gitdir = repo.common / "worktrees" / "wt2"
    env.setenv("GIT_DIR", str(worktree_gitdir))
    assert git_says(elsewhere, repo.home, {"GIT_DIR": str(worktree_gitdir)}) == repo.common
    assert describe_state_dir() == (
        repo.common / "infrafabric",
        f"the git repository at {repo.root.resolve()} named by GIT_DIR, shared by its worktrees")
    # GIT_DIR relative to the current directory, and as a `gitdir:` file
    env.setenv("GIT_DIR", os.path.relpath(repo.wt2 / ".git", elsewhere))
    assert state_dir() == repo.common / "infrafabric"
    env.delenv("GIT_DIR")
    # GIT_COMMON_DIR wins over what the walk would find
    env.chdir(repo.wt2)
    other = repo.tmp / "other"
    other.mkdir()
    git("init", "-q", cwd=other, home=repo.home)
    env.setenv("GIT_COMMON_DIR", str(other / ".git"))
    named = {"GIT_COMMON_DIR": str(other / ".git")}
    assert git_says(repo.wt2, repo.home, named) == (other / ".git").resolve()
    assert describe_state_dir() == (
        (other / ".git").resolve() / "infrafabric",
        f"the git repository at {other.resolve()} named by GIT_COMMON_DIR, shared by its worktrees")


def test_outside_a_repository_the_per_user_default(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    env.chdir(outside)
    assert git_common_dir() is None
    default = "the per-user default: not in a git repository"
    assert describe_state_dir() == (tmp_path / "home" / ".local" / "state" / "infrafabric", default)
    env.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert describe_state_dir() == (tmp_path / "xdg" / "infrafabric", default)
    env.setenv("XDG_STATE_HOME", "relative/state")  # not absolute: ignored, as the XDG spec says
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "infrafabric"
    assert not (tmp_path / "home" / ".local").exists(), "resolving must create nothing"
    env.delenv("XDG_STATE_HOME")
    env.setenv("HOME", "")  # no home directory at all: the current directory, as before
    assert describe_state_dir() == (outside / ".infrafabric",
                                    "the current directory: not in a git repository, and no HOME")


def test_home_and_if_home_win(repo: Repo, env: pytest.MonkeyPatch) -> None:
    env.chdir(repo.wt2)
    env.setenv("IF_HOME", str(repo.tmp / "from-env"))
    assert describe_state_dir() == (repo.tmp / "from-env", "IF_HOME")
    assert describe_state_dir(repo.tmp / "from-flag") == (repo.tmp / "from-flag", "--home")
    assert Embedded(repo.tmp / "from-flag").home == repo.tmp / "from-flag"
    # the CLI gets --home and IF_HOME as one option; Settings tells them apart
    from_env = Settings(bus=None, home=str(repo.tmp / "from-env"), debug=False)
    assert from_env.home_origin() == "IF_HOME"
    assert from_env.bus_origin() == f"the embedded server of {repo.tmp / 'from-env'} (IF_HOME)"
    from_flag = Settings(bus=None, home=str(repo.tmp / "from-flag"), debug=False)
    assert from_flag.home_origin() == "--home"
    env.delenv("IF_HOME")
    in_repo = Settings(bus=None, home=None, debug=False)
    assert in_repo.bus_origin() == (f"the embedded server of {repo.common / 'infrafabric'} "
                                    f"(the git repository at {repo.root.resolve()}, shared by its worktrees)")
    env.setenv("IF_BUS_URL", "nats://127.0.0.1:4222")
    assert Settings(bus="nats://127.0.0.1:4222", home=None, debug=False).bus_origin() == "IF_BUS_URL"
    assert Settings(bus="nats://127.0.0.1:4333", home=None, debug=False).bus_origin() == "--bus"


# -- real ifctl processes ---------------------------------------------------------------------


def ifctl(*args: str, cwd: Path, home: Path, env: dict[str, str] | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A real ``ifctl`` with no IF_BUS_URL, IF_HOME or git selector: the defaults decide."""
    return subprocess.run([IFCTL, *args], cwd=cwd, env=clean_env(home, **(env or {})), capture_output=True,
                          text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result


@pytest.fixture
def stopped(repo: Repo) -> Iterator[Repo]:
    """The repository; on the way out its embedded server (if any) is stopped."""
    try:
        yield repo
    finally:
        stop = ifctl("coordinator", "stop", "--json", cwd=repo.root, home=repo.home)
        assert stop.returncode == 0, stop.stderr
        info = json.loads(stop.stdout)
        assert not info["stopped"] or not pid_alive(info["pid"])


def test_worktrees_and_subdirectories_share_one_board(stopped: Repo) -> None:
    repo = stopped
    ok(ifctl("swarm", "register", "s1", "--cap", "docs:markdown", cwd=repo.root, home=repo.home))
    ok(ifctl("task", "create", "T1", "--title", "x", "--cap", "docs:markdown", cwd=repo.wt2, home=repo.home))
    for where in (repo.root / "docs" / "guide", repo.wt2, repo.wt2 / "docs"):
        board = json.loads(ok(ifctl("board", "show", "--json", cwd=where, home=repo.home)).stdout)
        assert [t["id"] for t in board["tasks"]] == ["T1"], (where, board)
    swarms = json.loads(ok(ifctl("swarm", "list", "--json", cwd=repo.wt2, home=repo.home)).stdout)
    assert "s1" in json.dumps(swarms)

    home = repo.common / "infrafabric"
    status = json.loads(ok(ifctl("coordinator", "status", "--json", "--why", cwd=repo.wt2,
                                 home=repo.home)).stdout)
    reason = f"the git repository at {repo.root.resolve()}, shared by its worktrees"
    assert status["healthy"] is True and status["home"] == str(home) and status["home_origin"] == reason
    assert status["bus"] == status["url"]
    assert status["bus_origin"] == f"the embedded server of {home} ({reason})"
    assert any("IF_HOME" in line for line in status["why"])
    human = ok(ifctl("coordinator", "status", cwd=repo.root / "docs", home=repo.home)).stdout
    assert f"from the embedded server of {home}" in human and str(repo.root.resolve()) in human
    started = json.loads(ok(ifctl("coordinator", "start", "--json", cwd=repo.wt2, home=repo.home)).stdout)
    assert started["started"] is False and started["home"] == str(home) and started["home_origin"] == reason
    assert "state directory" in ok(ifctl("coordinator", "start", cwd=repo.wt2, home=repo.home)).stdout

    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert (home / "coordinator.json").is_file() and (home / "nats").is_dir()
    assert list(repo.home.iterdir()) == [], "nothing goes to the per-user default inside a repository"
    assert not (repo.root / ".infrafabric").exists() and not (repo.wt2 / ".infrafabric").exists()
    assert git("status", "--porcelain", cwd=repo.root, home=repo.home) == ""


def test_an_explicit_home_is_its_own_board(stopped: Repo) -> None:
    repo = stopped
    own = repo.tmp / "own"
    try:
        ok(ifctl("--home", str(own), "task", "create", "T2", "--title", "y", cwd=repo.wt2, home=repo.home))
        status = json.loads(ok(ifctl("coordinator", "status", "--json", cwd=repo.wt2, home=repo.home,
                                     env={"IF_HOME": str(own)})).stdout)
        assert status["home"] == str(own)
        assert status["bus_origin"] == f"the embedded server of {own} (IF_HOME)"
        assert not (repo.common / "infrafabric").exists()
    finally:
        ok(ifctl("--home", str(own), "coordinator", "stop", cwd=repo.wt2, home=repo.home))


@pytest.mark.parametrize("line", ["board show", "board show --json", "task create T1 --title x",
                                  "swarm register s1 --cap docs:markdown", "witness checkpoint",
                                  "coordinator status"])
@pytest.mark.parametrize("how", ["IF_BUS_URL", "--bus"])
def test_an_unreachable_bus_exits_3_and_never_falls_back(repo: Repo, line: str, how: str) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    args = shlex.split(line)
    if how == "--bus":
        result = ifctl("--bus", url, *args, cwd=repo.wt2, home=repo.home)
    else:
        result = ifctl(*args, cwd=repo.wt2, home=repo.home, env={"IF_BUS_URL": url})
    assert result.returncode == 3, (result.stdout, result.stderr)
    said = result.stdout + result.stderr
    assert url.removeprefix("nats://") in said and "Traceback" not in said, said
    assert not (repo.common / "infrafabric").exists(), "a state directory (or an embedded server) was made"
    assert list(repo.home.iterdir()) == []
    assert git("status", "--porcelain", cwd=repo.root, home=repo.home) == ""
    if line == "coordinator status":
        assert f"from {how}" in result.stdout
