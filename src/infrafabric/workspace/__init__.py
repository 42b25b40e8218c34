"""The workspace that goes with a claim: the task's branch, a git worktree
for it, and guards against touching what another claim holds.

* :func:`open_worktree` makes (or reuses) the worktree of a claimed task on
  its branch and records it on the task; a task taken over after a lapse
  gets the previous holder's branch, commits and last progress note.
* :func:`finished_head` is the commit to record when the task completes.
* :func:`~infrafabric.workspace.guard.check` is what ``ifctl guard``
  asks: would this edit, commit or checkout trespass on another live claim?

Path leases themselves are the coordinator's (taken with the claim, see
:mod:`infrafabric.coordinator.leases`); this package works in the git
repository around them, through the ``git`` binary.
"""

from __future__ import annotations

from infrafabric.workspace.handoff import Handoff, finished_head, open_worktree

__all__ = ["Handoff", "finished_head", "open_worktree"]
