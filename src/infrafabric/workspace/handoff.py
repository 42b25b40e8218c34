"""A claimed task's worktree, and what the previous holder left in it."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from infrafabric.coordinator import ClaimOutcome, IFCoordinator, Task, TaskStatus
from infrafabric.errors import ConfigurationError, InfraFabricError
from infrafabric.workspace.git import Worktree, ensure_worktree, head_of, repo_top, worktree_dir, worktrees

__all__ = ["Handoff", "check_root", "finished_head", "open_worktree", "previous_holder"]

log = logging.getLogger(__name__)


@dataclass
class Handoff:
    """A claimed task's worktree, and (when the task was taken over) who held
    it before and the last progress note they left."""

    worktree: Worktree
    previous: str | None
    note: str | None

    def as_dict(self) -> dict[str, object]:
        return {**self.worktree.as_dict(), "previous_holder": self.previous, "progress": self.note}

    def lines(self) -> list[str]:
        w = self.worktree
        out = [f"worktree {w.path} on {w.branch}" + (" (made now)" if w.created else " (reused)")]
        if w.handed_over and (w.commits or self.previous):
            out.append(f"handed over from {self.previous or 'an earlier holder'}: {len(w.commits)} commit(s) "
                       f"on {w.branch}" + (f", newest {w.commits[0]}" if w.commits else ""))
        if self.note:
            out.append(f"their last progress note: {self.note}")
        return out + w.notes


def previous_holder(task: Task) -> str | None:
    """Who held ``task`` before its current claim (from its history), if anyone."""
    claims = [h.by for h in task.history if h.to is TaskStatus.CLAIMED]
    return claims[-2] if len(claims) > 1 else None


def check_root(root: str | Path, repo: str | Path | None = None, task_id: str | None = None) -> Path:
    """Check ``--worktree DIR`` before anything is claimed: the repository is
    found, DIR is not a file, and (when the task is known) ``DIR/<task-id>``
    is absent or a worktree of the repository (:class:`ConfigurationError`,
    exit 2). Returns the repository's top."""
    top = repo_top(repo)
    where = Path(root)
    if where.exists() and not where.is_dir():
        raise ConfigurationError(f"--worktree {root}: it exists and is not a directory")
    if task_id is not None:
        path = worktree_dir(root, task_id)
        if path.exists() and path.resolve() not in worktrees(top):
            raise ConfigurationError(f"--worktree {root}: {path} exists and is not a worktree of {top}",
                                     hint="pass another directory, or move it away")
    return top


async def open_worktree(coord: IFCoordinator, outcome: ClaimOutcome, root: str | Path, *,
                        repo: str | Path | None = None, release_on_failure: bool = True) -> Handoff:
    """Make or reuse ``outcome``'s task's worktree under ``root`` on the task's
    branch and record it on the task. If git fails, the claim is given back
    (released, unless ``release_on_failure`` is False: a claim held from
    before) and the error raised: no fresh claim is left held without the
    worktree its caller asked for."""
    task = outcome.task
    assert task is not None and outcome.claim_id is not None
    try:
        tree = await asyncio.to_thread(ensure_worktree, root, task.id, task.work_branch, repo=repo)
        await coord.record_workspace(outcome.swarm_id, task.id, outcome.claim_id, worktree=str(tree.path),
                                     host=socket.gethostname(), head=tree.head)
    except (InfraFabricError, OSError):
        if not release_on_failure:
            raise
        try:
            await coord.release_task(outcome.swarm_id, task.id, outcome.claim_id,
                                     reason="its worktree could not be made")
        except InfraFabricError as exc:
            log.warning("could not give %s back after its worktree failed: %s", task.id, exc.message)
        raise
    return Handoff(tree, previous_holder(task), task.progress)


def finished_head(task: Task) -> str | None:
    """The commit at the task's recorded worktree, if it is on this host; else None."""
    ws = task.workspace
    if ws is None or ws.worktree is None or ws.host != socket.gethostname() or not Path(ws.worktree).is_dir():
        return None
    return head_of(ws.worktree)
