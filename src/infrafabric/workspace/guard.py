"""Guards: refuse touching what another live claim holds.

:func:`check` decides for a set of repository paths (an edit about to be
made, or a commit's staged changes) and branches (a ``git checkout`` or
``git switch`` about to be run) whether another live claim holds them: a
path covered by another claim's path lease, a branch that is another
claimed task's work branch. What the caller holds itself is never refused:
claims of ``swarm_id``, and the task whose work branch is checked out where
the caller stands (its worktree). The front ends are ``ifctl guard
pre-commit`` (a git pre-commit hook) and ``ifctl guard tool`` (a PreToolUse
hook of Claude Code and Codex).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infrafabric.coordinator import IFCoordinator, Task, TaskStatus
from infrafabric.coordinator.copy import BoardCopy
from infrafabric.coordinator.leases import PathLeases
from infrafabric.coordinator.models import PathLease, default_branch, is_task_id
from infrafabric.errors import ConfigurationError
from infrafabric.statedir import checked_out_branch, worktree_root
from infrafabric.workspace.git import changed_paths, git

__all__ = ["Verdict", "check", "current_branch"]

#: the prefix of default work branches (``if/<task-id>``)
DEFAULT_PREFIX = default_branch("")


@dataclass
class Verdict:
    """What a guard says: ``refusals`` (each naming the holder and its task;
    empty means allowed) and ``notes`` (what was not checked, and why)."""

    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.refusals

    def as_dict(self) -> dict[str, object]:
        return {"allowed": self.allowed, "refusals": self.refusals, "notes": self.notes,
                "checked": self.checked}


def current_branch(where: str | Path) -> str | None:
    """The branch checked out at ``where`` (None when detached or outside a repository)."""
    done = git("symbolic-ref", "--short", "-q", "HEAD", cwd=where, check=False)
    return done.stdout.strip() or None if done.returncode == 0 else None


def _relative(top: Path, cwd: Path, path: str) -> str | None:
    """``path`` (absolute, or relative to ``cwd``) relative to the repository's
    top; None when it is outside the repository (not ours to guard)."""
    full = Path(path) if Path(path).is_absolute() else cwd / path
    try:
        rel = full.resolve().relative_to(top.resolve())
    except ValueError:
        return None
    text = rel.as_posix()
    return None if text in ("", ".") or text.startswith(".git/") or text == ".git" else text


async def _branch_tasks(coord: IFCoordinator, branches: Sequence[str], board: BoardCopy | None,
                        held: list[tuple[PathLease, Task]]) -> dict[str, Task]:
    """The tasks whose work branch may be one of ``branches``, without listing
    the board: those a running watcher's copy shows claimed; else explicit
    branches of claimed tasks are in the path-lease table (``held``) and a
    default ``if/<task-id>`` branch names its task."""
    if board is not None:
        return board.claimed()
    found = {t.id: t for _, t in held}
    for branch in branches:
        candidate = branch.removeprefix(DEFAULT_PREFIX)
        if branch.startswith(DEFAULT_PREFIX) and candidate not in found and is_task_id(candidate):
            task = await coord.tasks.read(candidate)
            if task is not None:
                found[task.id] = task
    return found


def _inspect(where: Path, paths: Sequence[str], staged: bool) -> tuple[str | None, list[str]] | None:
    """(the branch checked out at ``where``, the repository-relative paths to
    check), or None outside a repository. Runs git: called off the event loop."""
    if not where.is_dir():
        raise ConfigurationError(f"{where} is not a directory")
    top = worktree_root(where)  # pure Python: the tool guard runs before every edit
    if top is None:
        return None
    rel = [r for r in (_relative(top, where, p) for p in paths) if r is not None]
    if staged:
        rel += changed_paths(where)
    return checked_out_branch(top), rel


async def check(coord: IFCoordinator, *, cwd: str | Path, paths: Sequence[str] = (),
                branches: Sequence[str] = (), staged: bool = False,
                swarm_id: str | None = None) -> Verdict:
    """Whether touching ``paths`` (absolute or relative to ``cwd``; with
    ``staged``, also the changes staged for commit at ``cwd``) and checking out
    ``branches`` would trespass on another live claim. ``swarm_id``: whose
    claims are the caller's own (None: only the task whose branch is checked
    out at ``cwd``). A commit (``staged``) on a branch another swarm's claim
    holds is refused too. :class:`ConfigurationError` if ``cwd`` is not a
    directory; outside a git repository nothing is guarded (a note says so)."""
    verdict = Verdict()
    inspected = await asyncio.to_thread(_inspect, Path(cwd), paths, staged)
    if inspected is None:
        verdict.notes.append(f"{cwd} is not in a git repository: nothing to guard")
        return verdict
    here, rel = inspected
    live_board = coord.live_board()  # a running server's watcher: no reads (a moment behind the bus)
    held = await coord.leases.held(live_board)
    wanted = [*branches, *([here] if staged and here is not None else [])]
    tasks = await _branch_tasks(coord, wanted, live_board, held)

    def mine(task: Task) -> bool:
        return (swarm_id is not None and task.owner == swarm_id) or (
            here is not None and task.work_branch == here)

    others: list[tuple[PathLease, Task]] = [(lease, t) for lease, t in held if not mine(t)]
    for path in dict.fromkeys(rel):
        verdict.checked.append(path)
        holder = PathLeases.holder_of(path, others)
        if holder is not None and live_board is not None:  # the copy may be behind: refuse on the bus's word
            fresh = await coord.tasks.read(holder.task_id)
            if fresh is None or fresh.claim_id != holder.claim_id or not coord.leases.holds(
                    next(lease for lease, _ in others if lease.task_id == holder.task_id), fresh):
                others = [(lease, t) for lease, t in others if lease.task_id != holder.task_id]
                holder = PathLeases.holder_of(path, others)
        if holder is not None:
            verdict.refusals.append(f"{path} is leased by {holder.swarm_id} for task {holder.task_id} "
                                    f"(its paths include {holder.pattern})")
    now = coord.clock()
    live = [t for t in tasks.values() if t.status is TaskStatus.CLAIMED and t.lease_until is not None
            and now < t.lease_until]
    for branch in dict.fromkeys(branches):
        verdict.checked.append(f"branch {branch}")
        for t in live:
            if t.work_branch == branch and not (swarm_id is not None and t.owner == swarm_id):
                verdict.refusals.append(f"branch {branch} is held by {t.owner} for task {t.id}"
                                        + ("" if swarm_id else " (if that is you, pass --swarm)"))
    if staged and here is not None and swarm_id is not None:
        for t in live:
            if t.work_branch == here and t.owner != swarm_id:
                verdict.refusals.append(f"branch {here} is held by {t.owner} for task {t.id}, not by "
                                        f"{swarm_id}: its claim lapsed or passed on")
    return verdict
