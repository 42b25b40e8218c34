"""Board formats people already use, read into (and written from) the same
validated :class:`~infrafabric.coordinator.board.Board` as the native
markdown/YAML/JSON boards:

=============  ==============================================================
``gh-issues``  ``gh issue list --json number,title,body,labels,state,assignees``
               in; a shell script of ``gh`` commands out
``taskmaster`` task-master's ``.taskmaster/tasks/tasks.json`` (tagged or legacy)
``backlog``    Backlog.md's ``backlog/`` directory (``tasks/task-12 - Title.md``)
``speckit``    GitHub Spec Kit's ``tasks.md`` (``- [ ] T001 [P] [US1] ...``)
=============  ==============================================================

Every reader fills :class:`~infrafabric.coordinator.board.RawTask` records and
hands them to :func:`~infrafabric.coordinator.board.build_board`, so limits,
ids, duplicates, unknown dependencies and cycles are checked exactly as for
the native formats. See ``docs/board-format.md`` for each mapping.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from infrafabric.coordinator.board import Board
from infrafabric.coordinator.formats import backlog, gh_issues, speckit, taskmaster
from infrafabric.coordinator.models import TaskSpec, TaskStatus
from infrafabric.errors import BoardError

__all__ = ["FORMATS", "canonical", "detect", "export_text", "load_dir", "read_text"]

_Reader = Callable[[str, str], Board]

#: format name -> reader of one file's text
FORMATS: dict[str, _Reader] = {
    "gh-issues": gh_issues.read,
    "taskmaster": taskmaster.read,
    "backlog": backlog.read,
    "speckit": speckit.read,
}
_ALIASES = {
    "gh-issues": "gh-issues", "gh": "gh-issues", "github": "gh-issues", "github-issues": "gh-issues",
    "taskmaster": "taskmaster", "task-master": "taskmaster",
    "backlog": "backlog", "backlog.md": "backlog", "backlog-md": "backlog",
    "speckit": "speckit", "spec-kit": "speckit",
}


def canonical(name: str) -> str | None:
    """The format a name or alias means (``task-master`` -> ``taskmaster``), None if none."""
    return _ALIASES.get(name.strip().lower())


def detect(text: str, source: str) -> str | None:
    """Which of these formats ``text`` is, from its path and content; None for the native ones."""
    norm = source.replace("\\", "/")
    if norm.endswith(".taskmaster/tasks/tasks.json"):
        return "taskmaster"
    head = text.lstrip("\ufeff \t\n")
    if head.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return "gh-issues" if head.startswith("[") and '"number"' in text[:4000] else None
        if gh_issues.looks_like(data):
            return "gh-issues"
        if taskmaster.looks_like(data, source):
            return "taskmaster"
        return None
    if Path(norm).suffix.lower() not in ("", ".md", ".markdown"):
        return None  # .yaml, .yml: a native board
    if head.startswith("---") and backlog.looks_like(text):
        return "backlog"
    if speckit.looks_like(text):
        return "speckit"
    return None


def read_text(text: str, source: str, fmt: str) -> Board:
    return FORMATS[fmt](text, source)


def load_dir(path: Path, fmt: str | None = None) -> Board:
    """A directory board: Backlog.md's ``backlog/`` or ``backlog/tasks/``."""
    chosen = canonical(fmt) if fmt else "backlog"
    if chosen != "backlog":
        raise BoardError([f"{path}: is a directory; only the backlog format reads a directory "
                          f"(got --format {fmt})"])
    return backlog.load_dir(path)


def export_text(fmt: str, tasks: Sequence[TaskSpec], statuses: Mapping[str, TaskStatus | str] | None = None,
                owners: Mapping[str, str] | None = None) -> str:
    """The tasks in a one-file format (``gh-issues``, ``taskmaster``, ``speckit``)."""
    chosen = canonical(fmt)
    if chosen == "gh-issues":
        return gh_issues.export(tasks, statuses)
    if chosen == "taskmaster":
        return taskmaster.export(tasks, statuses)
    if chosen == "speckit":
        return speckit.export(tasks, statuses)
    raise BoardError([f"format {fmt!r} is not written as one file (backlog writes a directory: --out DIR)"])
