"""The seeds' ``STATUS-SESSION-{N}*.yaml`` files: parsed, validated, and
planned as a replay against the live board (``ifctl board import-status``).

The seeds' fleets wrote one YAML mapping per session on its own branch. The
shapes found in the seeds, all accepted (any mix of their keys):

* claim: ``session``, ``claiming``, ``timestamp``, ``branch`` (and a
  ``milestone: "0% - Starting task"``);
* progress: ``session``, ``current_task``, ``milestone: "50% - ..."``,
  ``timestamp``, ``branch``, ``blocked_on`` (a task id or null),
  ``next_action``, ``tasks_completed`` and ``tasks_in_progress`` (counts);
* completion: ``session``, ``completed``, ``timestamp``, ``deliverable``,
  ``tests_pass``, ``branch`` (and ``milestone: "100% - Complete"``);
* the polling loop's heartbeat: ``session``, ``status`` (``polling``,
  ``waiting_for_task``), ``last_poll``, ``branch``, ``current_task``
  (``none`` when idle);
* the coordination rules' extras: ``filler`` (the filler task worked on),
  ``help_wanted`` (true/false).

``completed``, ``claiming``, ``current_task`` and ``blocked_on`` take one
task id or a list; ``completed_tasks`` (or ``tasks_completed`` given as a
list) lists completed ids too. ``none``, ``null`` and empty mean no task.
The session comes from ``session``, else from the file name
(``STATUS-SESSION-7-IFBUS.yaml`` → ``session-7-ifbus``). Every problem is a
:class:`~infrafabric.errors.BoardError` naming the file and line; an unknown
key is a warning, unless it looks like a misspelt known one (an error).

The replay rules (:func:`plan_replay`), decided for the migration:

* a task a session reports **completed** becomes completed, the session
  recorded as its owner in the task's history (the reason names the file,
  its timestamp, deliverable and tests); if two sessions report the same
  task completed, the earliest report wins and the others are warned about;
* a **milestone** (``"50% - CAS logic implemented"``) of a task still open
  becomes its progress note (:attr:`Task.progress`, shown by ``ifctl task
  show`` and handed to whoever claims it), naming the session; of a completed
  task it goes into the completion's reason;
* a task completed whose dependencies are not (on the board, nor in the
  replay) is completed anyway, with a warning: the file records finished
  work, as ``board import`` keeps COMPLETED rows;
* an unknown task id is an error (``--skip-unknown`` makes it a warning); a
  task claimed on the bus now, failed or cancelled is a refusal: nothing is
  written;
* a task already completed on the board, or a note already recorded, is left
  unchanged: replaying the same files twice changes nothing the second time.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from infrafabric.coordinator.models import TASK_ID_PATTERN, Task, TaskStatus
from infrafabric.coordinator.yamlnodes import compose_file, line_of, read_text, scalar_value
from infrafabric.errors import BoardError, ConfigurationError

__all__ = [
    "Milestone",
    "ReplayPlan",
    "StatusFileError",
    "StatusReport",
    "find_status_files",
    "load_status_files",
    "parse_status_file",
    "plan_replay",
]

_TASK_ID = re.compile(f"^{TASK_ID_PATTERN}$")
_MILESTONE = re.compile(r"^\s*(\d{1,3}(?:\.\d+)?)\s*%\s*(?:[-\u2013\u2014:]\s*)?(.*)$", re.S)
_FILE_SESSION = re.compile(r"^STATUS-(.+?)\.ya?ml$", re.I)
_NO_TASK = {"", "none", "null", "-", "n/a"}

TEXT_KEYS = {"status", "branch", "next_action", "deliverable", "filler"}
TIME_KEYS = {"timestamp", "last_poll"}
TASK_KEYS = {"claiming", "current_task", "completed", "completed_tasks", "blocked_on"}
BOOL_KEYS = {"tests_pass", "help_wanted"}
COUNT_KEYS = {"tasks_completed", "tasks_in_progress"}
KNOWN_KEYS = {"session", "milestone"} | TEXT_KEYS | TIME_KEYS | TASK_KEYS | BOOL_KEYS | COUNT_KEYS
STATUS_GLOBS = ("STATUS-*.yaml", "STATUS-*.yml", "STATUS.yaml", "STATUS.yml")


@dataclass(frozen=True)
class Milestone:
    """``"50% - CAS transaction logic implemented"``: percent (None if the text has none) and text."""

    percent: float | None
    text: str
    line: int

    def __str__(self) -> str:
        if self.percent is None:
            return self.text
        pct = f"{self.percent:g}%"
        return f"{pct} - {self.text}" if self.text else pct


@dataclass(frozen=True)
class StatusReport:
    """One STATUS file, validated."""

    path: str
    session: str
    session_line: int
    timestamp: str | None = None
    status: str | None = None
    branch: str | None = None
    #: task id -> the line naming it
    completed: dict[str, int] = field(default_factory=dict)
    working_on: dict[str, int] = field(default_factory=dict)
    blocked_on: dict[str, int] = field(default_factory=dict)
    milestone: Milestone | None = None
    next_action: str | None = None
    deliverable: str | None = None
    tests_pass: bool | None = None
    filler: str | None = None
    help_wanted: bool | None = None
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.path).name

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"


class StatusFileError(BoardError):
    """STATUS files that cannot be replayed (exit 2): every problem, each
    ``FILE:LINE: what is wrong``."""

    def __init__(self, problems: list[str], *, hint: str | None = None,
                 what: str = "invalid STATUS file") -> None:
        super().__init__(problems, hint=hint)
        if len(self.problems) == 1:
            self.message = f"{what}: {self.problems[0]}"
        else:
            listed = "\n".join(f"  {p}" for p in self.problems)
            self.message = f"{what}: {len(self.problems)} problems\n{listed}"
        self.args = (self.message,)


def _problem(path: str, node: yaml.Node | None, text: str) -> str:
    return f"{path}:{line_of(node)}: {text}" if node is not None else f"{path}: {text}"


def _task_ids(path: str, key: str, node: yaml.Node, problems: list[str]) -> dict[str, int]:
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    out: dict[str, int] = {}
    for item in items:
        value = scalar_value(item) if isinstance(item, yaml.ScalarNode) else item
        if value is None or (isinstance(value, str) and value.strip().lower() in _NO_TASK):
            continue
        scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
        text = str(value).strip() if scalar else None
        if text is None or not _TASK_ID.match(text):
            if not isinstance(item, yaml.ScalarNode):
                value = "a mapping" if isinstance(item, yaml.MappingNode) else "a nested list"
            problems.append(_problem(path, item, f"{key}: {value!r} is not a task id "
                                                  "(1-128 letters, digits or . _ - : @ + = ~)"))
            continue
        out.setdefault(text, line_of(item))
    return out


def _time(path: str, key: str, node: yaml.Node, problems: list[str]) -> str | None:
    value = scalar_value(node) if isinstance(node, yaml.ScalarNode) else None
    if value is None:
        return None
    text = str(value).strip()
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        problems.append(_problem(path, node, f"{key}: {text[:80]!r} is not an ISO 8601 time "
                                             "(e.g. 2025-11-12T14:30:00Z)"))
        return None
    return text


def session_from_name(path: str | Path) -> str | None:
    """``STATUS-SESSION-7-IFBUS.yaml`` → ``session-7-ifbus`` (None if the name is not STATUS-*.yaml)."""
    found = _FILE_SESSION.match(Path(path).name)
    return found.group(1).lower() if found else None


def parse_status_file(text: str, path: str) -> StatusReport:
    """A :class:`StatusReport` from a STATUS file's text; :class:`BoardError`
    listing every problem as ``FILE:LINE: problem``."""
    try:
        root = compose_file(path, what="STATUS file", text=text)
    except ConfigurationError as exc:
        raise StatusFileError([exc.message.removeprefix("STATUS file ")]) from None
    problems: list[str] = []
    warnings: list[str] = []
    if not isinstance(root, yaml.MappingNode):
        raise StatusFileError([_problem(path, root, "a STATUS file is one YAML mapping "
                                               "(session: ..., status: ...)")])
    fields: dict[str, Any] = {}
    lines: dict[str, yaml.Node] = {}
    for key_node, value in root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            problems.append(_problem(path, key_node, "keys must be plain text"))
            continue
        if key in lines:
            problems.append(_problem(path, key_node, f"{key} is given twice"))
            continue
        lines[key] = key_node
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1, cutoff=0.8)
            if close:
                problems.append(_problem(path, key_node, f"unknown key {key!r}: did you mean {close[0]!r}?"))
            else:
                warnings.append(_problem(path, key_node, f"unknown key {key!r} ignored"))
            continue
        if key == "session" or key in TEXT_KEYS:
            got = scalar_value(value) if isinstance(value, yaml.ScalarNode) else None
            if got is not None and (isinstance(got, bool) or not isinstance(got, str | int | float)):
                problems.append(_problem(path, value, f"{key} must be text"))
            elif got is not None and len(str(got)) > 2000:
                problems.append(_problem(path, value, f"{key} is longer than 2,000 characters"))
            elif got is not None:
                fields[key] = str(got).strip()
            elif not isinstance(value, yaml.ScalarNode):
                problems.append(_problem(path, value, f"{key} must be text"))
        elif key in TIME_KEYS:
            fields[key] = _time(path, key, value, problems)
        elif key in TASK_KEYS:
            fields[key] = _task_ids(path, key, value, problems)
        elif key in BOOL_KEYS:
            got = scalar_value(value) if isinstance(value, yaml.ScalarNode) else "?"
            if got is not None and not isinstance(got, bool):
                problems.append(_problem(path, value, f"{key} must be true or false"))
            else:
                fields[key] = got
        elif key in COUNT_KEYS:
            if isinstance(value, yaml.SequenceNode) and key == "tasks_completed":
                fields["completed_tasks_list"] = _task_ids(path, key, value, problems)
                continue
            got = scalar_value(value) if isinstance(value, yaml.ScalarNode) else None
            if got is not None and (isinstance(got, bool) or not isinstance(got, int)
                                    or not 0 <= got <= 10**6):
                problems.append(_problem(path, value, f"{key} must be a count (a whole number >= 0)"))
            elif got is not None:
                fields[key] = got
        elif key == "milestone":
            got = scalar_value(value) if isinstance(value, yaml.ScalarNode) else None
            if isinstance(got, int | float) and not isinstance(got, bool):
                got = f"{got}%"
            if got is None:
                continue
            if not isinstance(got, str) or len(got) > 2000:
                problems.append(_problem(path, value, "milestone must be text like \"50% - what is done\""))
                continue
            m = _MILESTONE.match(got)
            if m is None:
                fields["milestone"] = Milestone(None, got.strip(), line_of(value))
            elif float(m.group(1)) > 100:
                problems.append(_problem(path, value, f"milestone: {m.group(1)}% is more than 100%"))
            else:
                fields["milestone"] = Milestone(float(m.group(1)), m.group(2).strip(), line_of(value))
    session = fields.get("session") or session_from_name(path)
    session_node = lines.get("session")
    if not session:
        problems.append(_problem(path, root, "no session: add `session: session-N` (or name the file "
                                             "STATUS-SESSION-N.yaml)"))
    elif not _TASK_ID.match(session):
        problems.append(_problem(path, session_node, f"session {session!r} is not a swarm id (1-128 letters, "
                                                     "digits or . _ - : @ + = ~)"))
    elif "session" in fields and session_from_name(path) not in (None, session):
        warnings.append(_problem(path, session_node, f"session {session!r} differs from the file name: "
                                                     f"{session!r} is used"))
    if problems:
        raise StatusFileError(problems, hint="see the seeds' STATUS-SESSION-{N}.yaml shapes in "
                                        "docs/MIGRATION-GIT-TO-ETCD.md")
    completed = dict(fields.get("completed") or {})
    for source in ("completed_tasks", "completed_tasks_list"):
        for task_id, line in (fields.get(source) or {}).items():
            completed.setdefault(task_id, line)
    working = {**(fields.get("claiming") or {}), **(fields.get("current_task") or {})}
    working = {t: line for t, line in working.items() if t not in completed}
    assert session is not None
    return StatusReport(
        path=path, session=session, session_line=line_of(session_node) if session_node else 1,
        timestamp=fields.get("timestamp") or fields.get("last_poll"), status=fields.get("status"),
        branch=fields.get("branch"), completed=completed, working_on=working,
        blocked_on=dict(fields.get("blocked_on") or {}), milestone=fields.get("milestone"),
        next_action=fields.get("next_action"), deliverable=fields.get("deliverable"),
        tests_pass=fields.get("tests_pass"), filler=fields.get("filler"),
        help_wanted=fields.get("help_wanted"),
        counts={k: fields[k] for k in COUNT_KEYS if isinstance(fields.get(k), int)}, warnings=warnings)


def find_status_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files to replay: each file given, and the ``STATUS-*.yaml`` (and
    ``STATUS.yaml``) files directly in each directory given; sorted, no file twice."""
    found: dict[str, Path] = {}
    for given in paths:
        p = Path(given)
        if p.is_dir():
            inside = sorted({q for g in STATUS_GLOBS for q in p.glob(g) if q.is_file()})
            if not inside:
                raise ConfigurationError(f"{p}: no STATUS-*.yaml files in this directory")
            for q in inside:
                found.setdefault(str(q.resolve()), q)
        elif p.exists():
            found.setdefault(str(p.resolve()), p)
        else:
            raise ConfigurationError(f"{p}: no such file or directory")
    return [found[k] for k in sorted(found, key=lambda k: found[k].name)]


def load_status_files(paths: Iterable[str | Path]) -> list[StatusReport]:
    """Every STATUS file under ``paths`` parsed; one :class:`BoardError`
    listing the problems of every file."""
    reports: list[StatusReport] = []
    problems: list[str] = []
    for p in find_status_files(paths):
        try:
            reports.append(parse_status_file(read_text(p, what="STATUS file"), str(p)))
        except StatusFileError as exc:
            problems += exc.problems
        except ConfigurationError as exc:
            problems.append(exc.message.removeprefix("STATUS file "))
    if problems:
        raise StatusFileError(problems, hint="nothing was replayed; fix the files and run it again")
    return reports


# -- the replay ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    task_id: str
    by: str
    reason: str
    source: str


@dataclass(frozen=True)
class Note:
    task_id: str
    by: str
    note: str
    source: str


@dataclass
class ReplayPlan:
    """What replaying the reports would do on the board as read."""

    complete: list[Completion] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    #: (task id, why it is left as it is)
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: problems that refuse the whole replay (nothing is written)
    errors: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


def _clip(text: str, limit: int = 3900) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _completion_reason(r: StatusReport) -> str:
    details = [f"replayed from {r.name}" + (f" ({r.timestamp})" if r.timestamp else "")]
    if r.deliverable:
        details.append(f"deliverable {r.deliverable}")
    if r.tests_pass is not None:
        details.append("tests pass" if r.tests_pass else "tests did NOT pass")
    if r.milestone is not None:
        details.append(str(r.milestone))
    if r.branch:
        details.append(f"branch {r.branch}")
    return _clip(f"completed by {r.session}: " + "; ".join(details))


def _progress_note(r: StatusReport) -> str:
    what = (str(r.milestone) if r.milestone is not None
            else f"was working on it (status {r.status or 'unknown'})")
    extra = [f"{r.name}" + (f", {r.timestamp}" if r.timestamp else "")]
    if r.next_action:
        extra.append(f"next: {r.next_action}")
    if r.blocked_on:
        extra.append("blocked on " + ", ".join(r.blocked_on))
    if r.branch:
        extra.append(f"branch {r.branch}")
    return _clip(f"{r.session}: {what} ({'; '.join(extra)})")


def plan_replay(reports: Sequence[StatusReport], board: Mapping[str, Task], *, now: float,
                skip_unknown: bool = False) -> ReplayPlan:
    """What replaying ``reports`` against ``board`` (task id -> live task)
    does, by the module's rules. Writes nothing."""
    plan = ReplayPlan()
    for r in reports:
        plan.warnings += r.warnings
    ordered = sorted(reports, key=lambda r: (r.timestamp or "", r.name))
    completing: dict[str, Completion] = {}

    def known(r: StatusReport, task_id: str, line: int) -> Task | None:
        task = board.get(task_id)
        if task is None:
            message = f"{r.where(line)}: task {task_id} is not on the board"
            (plan.warnings if skip_unknown else plan.errors).append(
                message + (" (skipped: --skip-unknown)" if skip_unknown else ""))
        return task

    for r in ordered:
        for task_id, line in r.completed.items():
            task = known(r, task_id, line)
            if task is None:
                continue
            if task_id in completing:
                first = completing[task_id]
                if first.by != r.session:
                    plan.warnings.append(f"{r.where(line)}: {task_id} is also reported completed by "
                                         f"{first.by} ({first.source}), earlier: {first.by} is kept")
                continue
            if task.status is TaskStatus.COMPLETED:
                plan.unchanged.append((task_id, f"already completed (by {task.owner or 'unknown'})"))
                completing[task_id] = Completion(task_id, task.owner or "", "", "the board")
                continue
            if task.status is TaskStatus.CLAIMED and (task.lease_until is None or task.lease_until > now):
                plan.refusals.append(f"{r.where(line)}: {task_id} is claimed by {task.owner} on the bus now: "
                                     "its holder completes it (ifctl task complete), or it is released first")
                continue
            if task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                plan.refusals.append(f"{r.where(line)}: {task_id} is {task.status.value} on the board "
                                     "(reopen it first: ifctl task reopen)")
                continue
            completing[task_id] = Completion(task_id, r.session, _completion_reason(r), r.where(line))
    done = {t for t, task in board.items() if task.status is TaskStatus.COMPLETED} | set(completing)
    for task_id, c in completing.items():
        if c.source == "the board":
            continue
        open_deps = [d for d in board[task_id].dependencies if d not in done]
        if open_deps:
            plan.warnings.append(f"{c.source}: {task_id} is completed though its dependencies "
                                 f"{', '.join(open_deps)} are not (kept: the file records finished work)")
        plan.complete.append(c)
    latest: dict[str, Note] = {}
    for r in ordered:
        for task_id, line in r.working_on.items():
            task = known(r, task_id, line)
            if task is None:
                continue
            if task_id in completing:
                plan.unchanged.append((task_id, f"progress of {r.session} ({r.name}) not kept: the task is "
                                                "completed"))
                continue
            if task.status is TaskStatus.CLAIMED and task.owner != r.session:
                plan.warnings.append(f"{r.where(line)}: {task_id} is claimed by {task.owner} now: "
                                     f"{r.session}'s progress note is not recorded")
                continue
            if task_id in latest and latest[task_id].by != r.session:
                plan.warnings.append(f"{r.where(line)}: {task_id} was also worked on by {latest[task_id].by} "
                                     f"({latest[task_id].source}): the later report's note is kept")
            latest[task_id] = Note(task_id, r.session, _progress_note(r), r.where(line))
        for task_id, line in r.blocked_on.items():
            known(r, task_id, line)
    for task_id, n in latest.items():
        if board[task_id].progress == n.note:
            plan.unchanged.append((task_id, "progress note already recorded"))
        else:
            plan.notes.append(n)
    order = {t: i for i, t in enumerate(_dependency_order(board, [c.task_id for c in plan.complete]))}
    plan.complete.sort(key=lambda c: order[c.task_id])
    return plan


def _dependency_order(board: Mapping[str, Task], ids: list[str]) -> list[str]:
    """``ids`` with each after those of its dependencies among them (ties by id)."""
    wanted = set(ids)
    waiting = {t: {d for d in board[t].dependencies if d in wanted and d != t} for t in wanted}
    out: list[str] = []
    while waiting:
        ready = sorted(t for t, deps in waiting.items() if not deps) or [min(waiting)]  # a cycle: by id
        for t in ready:
            out.append(t)
            del waiting[t]
        for deps in waiting.values():
            deps.difference_update(ready)
    return out
