"""Where a project's InfraFabric state lives: the state directory.

``--home``, else ``IF_HOME``, else, inside a git repository, ``infrafabric/``
in the repository's common git directory (so the main work tree, every
linked worktree and every subdirectory share one board), else the per-user
``${XDG_STATE_HOME:-~/.local/state}/infrafabric``.

Standard library only, and imported by the hooks, which must start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["checked_out_branch", "describe_state_dir", "git_common_dir", "state_dir", "worktree_root"]


def state_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """The state directory: ``home`` (``--home``), else ``$IF_HOME``, else
    ``<common git dir>/infrafabric`` when the current directory is in a git
    repository (any worktree, any subdirectory), else the per-user default
    ``${XDG_STATE_HOME:-$HOME/.local/state}/infrafabric``. Nothing is created."""
    return describe_state_dir(home)[0]


def describe_state_dir(home: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """:func:`state_dir` and, for humans, why it is that one: ``"--home"``,
    ``"IF_HOME"``, ``"the git repository at /x, shared by its worktrees"`` or
    ``"the per-user default: not in a git repository"``."""
    if home:
        return Path(home).absolute(), "--home"
    env = os.environ.get("IF_HOME")
    if env:
        return Path(env).absolute(), "IF_HOME"
    found = _find_git_common_dir(Path.cwd())
    if found is not None:
        common, via = found
        # a main repository's common dir is its work tree's .git; a bare or submodule one stands alone
        where = common.parent if common.name == ".git" else common
        named = f" named by {via}" if via else ""
        return common / "infrafabric", f"the git repository at {where}{named}, shared by its worktrees"
    user = _user_state_home()
    if user is None:  # no home directory at all (a container's anonymous uid): the old default
        return Path(".infrafabric").absolute(), "the current directory: not in a git repository, and no HOME"
    return user / "infrafabric", "the per-user default: not in a git repository"


def git_common_dir(cwd: str | os.PathLike[str] | None = None) -> Path | None:
    """The common git directory of the repository around ``cwd`` (default: the
    current directory), or None outside any repository.

    Pure Python, as git finds it: ``GIT_COMMON_DIR`` if set; else ``GIT_DIR`` if
    set (a git directory or a ``gitdir:`` file); else the nearest ``.git`` walking
    up from ``cwd`` (a directory, or a ``gitdir: <path>`` file as in linked
    worktrees and submodules), or ``cwd``'s nearest ancestor that is itself a git
    directory (inside ``.git``, or a bare repository). A git directory's
    ``commondir`` file names the common directory relative to it (linked
    worktrees); without one the git directory is the common one.
    """
    found = _find_git_common_dir(Path(cwd).absolute() if cwd is not None else Path.cwd())
    return None if found is None else found[0]


def _find_git_common_dir(cwd: Path) -> tuple[Path, str] | None:
    """(common dir, the environment variable that named it or "") or None."""
    env_common = os.environ.get("GIT_COMMON_DIR")
    if env_common:
        common = cwd / env_common
        if (common / "objects").is_dir() and (common / "refs").is_dir():
            return common.resolve(), "GIT_COMMON_DIR"
    env_dir = os.environ.get("GIT_DIR")
    if env_dir:
        gitdir = _as_git_dir(cwd / env_dir)
        if gitdir is not None:
            return _common_of(gitdir), "GIT_DIR"
    for directory in (cwd, *cwd.parents):
        gitdir = _as_git_dir(directory / ".git")
        if gitdir is None and _is_git_dir(directory):
            gitdir = directory
        if gitdir is not None:
            return _common_of(gitdir), ""
    return None


def _as_git_dir(path: Path) -> Path | None:
    """``path`` if it is a git directory, the directory a ``gitdir:`` file at
    ``path`` names if that is one, else None."""
    try:
        if not path.is_file():
            return path if _is_git_dir(path) else None
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:  # unreadable: not a repository we can use
        return None
    first = text.splitlines()[0].strip() if text else ""
    if not first.startswith("gitdir:"):
        return None
    target = path.parent / first[len("gitdir:"):].strip()
    return target if _is_git_dir(target) else None


def _is_git_dir(path: Path) -> bool:
    """git's own test, roughly: a HEAD file, and objects/ and refs/ here or in
    the directory a ``commondir`` file names."""
    try:
        if not (path / "HEAD").is_file():
            return False
        common = _common_of(path)
        return (common / "objects").is_dir() and (common / "refs").is_dir()
    except OSError:
        return False


def _common_of(gitdir: Path) -> Path:
    try:
        named = (gitdir / "commondir").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        named = ""
    return (gitdir / named).resolve() if named else gitdir.resolve()


def _user_state_home() -> Path | None:
    """``$XDG_STATE_HOME`` (if absolute, as the XDG spec requires) else
    ``~/.local/state``; None without a home directory."""
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg)
    if os.environ.get("HOME") == "":  # set but empty: no home (Path.home() would say "/")
        return None
    try:
        return Path.home() / ".local" / "state"
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return None


def worktree_root(cwd: str | os.PathLike[str] | None = None) -> Path | None:
    """The top of the work tree around ``cwd`` (this worktree's, not the main
    one's): the nearest directory holding a ``.git`` entry, or None."""
    start = Path(cwd).absolute() if cwd is not None else Path.cwd()
    for directory in (start, *start.parents):
        if _as_git_dir(directory / ".git") is not None:
            return directory
    return None


def checked_out_branch(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The branch checked out in the work tree around ``cwd`` (its ``HEAD``
    file, as ``git symbolic-ref --short HEAD`` says), or None when detached or
    outside a repository. Pure Python: the guards ask before every edit."""
    top = worktree_root(cwd)
    gitdir = None if top is None else _as_git_dir(top / ".git")
    if gitdir is None:
        return None
    try:
        head = (gitdir / "HEAD").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return head[len("ref: refs/heads/"):] if head.startswith("ref: refs/heads/") else None
