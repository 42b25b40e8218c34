"""Git worktrees for claimed tasks, through the ``git`` binary.

A claimed task's work goes on its branch (:attr:`TaskSpec.work_branch`,
``if/<task-id>`` by default) in a worktree of its own under a directory the
agent names (``--worktree DIR``): ``DIR/<task-id>``. :func:`ensure_worktree`
creates it, or reuses it when it is already there on the right branch. When
the branch exists (a previous holder's lease lapsed), the worktree gets that
branch with the previous holder's commits: a handoff, not a fresh start.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from infrafabric.errors import ConfigurationError, WorkspaceError

__all__ = ["Worktree", "changed_paths", "ensure_worktree", "git", "head_of", "repo_top",
           "worktree_dir", "worktrees"]

log = logging.getLogger(__name__)
#: a git call that takes longer than this is stuck (a lock, a credential prompt)
GIT_TIMEOUT = 60.0


def git(*args: str, cwd: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``git args`` in ``cwd`` (never prompting for credentials)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env,
                              timeout=GIT_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise ConfigurationError("the git binary is not installed (worktrees need it)") from exc
    except subprocess.TimeoutExpired as exc:
        raise WorkspaceError(f"git {' '.join(args[:3])} took over {GIT_TIMEOUT:g} s in {cwd}") \
            from exc
    if check and done.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} (in {cwd}) failed: {done.stderr.strip()[:500]}")
    return done


def repo_top(where: str | os.PathLike[str] | None = None) -> Path:
    """The top of the work tree around ``where`` (default: the current
    directory); :class:`ConfigurationError` (exit 2) outside a repository."""
    cwd = Path(where) if where is not None else Path.cwd()
    if not cwd.is_dir():
        raise ConfigurationError(f"{cwd} is not a directory")
    done = git("rev-parse", "--show-toplevel", cwd=cwd, check=False)
    if done.returncode != 0:
        raise ConfigurationError(f"{cwd} is not inside a git repository (worktrees are made from one)",
                                 hint="run it from the project's checkout, or `git init` one")
    return Path(done.stdout.strip())


def head_of(path: str | os.PathLike[str]) -> str | None:
    """The commit checked out at ``path``, or None (no commit yet, not a repository)."""
    done = git("rev-parse", "--verify", "--quiet", "HEAD", cwd=path, check=False)
    return done.stdout.strip() or None if done.returncode == 0 else None


def worktree_dir(root: str | os.PathLike[str], task_id: str) -> Path:
    """``root/<task-id>``, the id made a safe directory name (``:`` → ``-``)."""
    return Path(root).resolve() / re.sub(r"[^A-Za-z0-9._@+=~-]", "-", task_id).lstrip(".")


@dataclass
class Worktree:
    """A task's worktree: where, on which branch, at which commit; whether it
    was made now, and (a handoff) how many commits the branch already had
    beyond its base."""

    path: Path
    branch: str
    head: str | None
    created: bool
    #: the branch existed already: the previous holder's work is on it
    handed_over: bool = False
    commits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "branch": self.branch, "head": self.head, "created": self.created,
                "handed_over": self.handed_over, "commits": self.commits}


def worktrees(top: Path) -> dict[Path, str | None]:
    """Every worktree of the repository: resolved path → branch (None when detached)."""
    out: dict[Path, str | None] = {}
    current: Path | None = None
    for line in git("worktree", "list", "--porcelain", cwd=top).stdout.splitlines():
        if line.startswith("worktree "):
            current = Path(line[len("worktree "):]).resolve()
            out[current] = None
        elif line.startswith("branch ") and current is not None:
            out[current] = line[len("branch "):].removeprefix("refs/heads/")
    return out


def _branch_exists(top: Path, branch: str) -> bool:
    done = git("show-ref", "--verify", "--quiet", f"refs/heads/{branch}", cwd=top, check=False)
    return done.returncode == 0


def ensure_worktree(root: str | os.PathLike[str], task_id: str, branch: str, *,
                    repo: str | os.PathLike[str] | None = None, base: str | None = None) -> Worktree:
    """The worktree of ``task_id`` under ``root`` on ``branch``, made if
    missing (from ``base``, default the repository's HEAD, when the branch is
    new; on the existing branch otherwise), reused if already there.

    A path that exists and is not this repository's worktree on ``branch``
    is refused (:class:`ConfigurationError`, exit 2): nothing is overwritten.
    A previous holder's worktree on the branch elsewhere is left as it is (its
    uncommitted changes stay there); the new one gets the branch's commits."""
    top = repo_top(repo)
    path = worktree_dir(root, task_id)
    trees = worktrees(top)
    if path.exists():
        on = trees.get(path.resolve(), "missing")
        if on == "missing":
            raise ConfigurationError(f"{path} exists and is not a worktree of {top}",
                                     hint="pass another --worktree directory, or move it away")
        if on != branch:
            raise ConfigurationError(f"{path} is a worktree on {on or 'a detached HEAD'}, not on {branch}",
                                     hint=f"git -C {path} switch {branch}, or remove that worktree")
        return Worktree(path, branch, head_of(path), created=False, handed_over=True,
                        commits=_commits(top, branch, base), notes=[f"reused the worktree at {path}"])
    path.parent.mkdir(parents=True, exist_ok=True)
    git("worktree", "prune", cwd=top)  # a dead holder's removed worktree must not keep its branch
    notes: list[str] = []
    if _branch_exists(top, branch):
        elsewhere = [p for p, b in trees.items() if b == branch and p.exists()]
        args = ["worktree", "add"]
        if elsewhere:  # the previous holder's worktree still has it checked out
            args.append("--force")
            notes.append(f"the previous holder's worktree {elsewhere[0]} is on {branch} too; "
                         "its uncommitted changes stay there")
        git(*args, str(path), branch, cwd=top)
        handed = True
    else:
        start = base or "HEAD"
        if head_of(top) is None and base is None:
            raise ConfigurationError(f"{top} has no commit yet: a worktree branches from one",
                                     hint="commit something first (git commit --allow-empty -m init)")
        git("worktree", "add", "-b", branch, str(path), start, cwd=top)
        handed = False
    commits = _commits(top, branch, base) if handed else []
    return Worktree(path, branch, head_of(path), created=True, handed_over=handed, commits=commits,
                    notes=notes)


def _commits(top: Path, branch: str, base: str | None) -> list[str]:
    """The branch's commits not on ``base`` (default: the repository's HEAD), newest first (at most 20)."""
    done = git("log", "--format=%h %s", "-n", "20", f"{base or 'HEAD'}..{branch}", cwd=top, check=False)
    return done.stdout.splitlines() if done.returncode == 0 else []


def changed_paths(where: str | os.PathLike[str], *, staged: bool = True) -> list[str]:
    """Repository-relative paths a commit would change (``staged``: the index
    against HEAD, renames as both sides), for the pre-commit guard."""
    args = ["diff", "--name-only", "-z", "--no-renames"] + (["--cached"] if staged else [])
    out = git(*args, cwd=where).stdout
    return [p for p in out.split("\0") if p]
