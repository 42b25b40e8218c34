"""GitHub Spec Kit ``tasks.md``: ``- [ ] T001 [P] [US1] Create ... in src/...``
lines grouped under ``## Phase N: ...`` headings.

Dependencies follow the file's structure (see ``docs/board-format.md``):
within a phase a task without ``[P]`` waits for the task (or the run of
``[P]`` tasks) just before it, a run of ``[P]`` tasks shares what comes before
it; the first tasks of a phase wait for the previous phase's last step, except
that user-story phases all wait for the last phase before them that is not a
user story (the foundation) and run in parallel with each other; the next
other phase waits for every story. ``(depends on T003)`` at the end of a line
adds dependencies, ``(depends only on T003)`` / ``(no dependencies)``
replaces them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infrafabric.coordinator.board import Board, Problems, RawTask, build_board, section_runs
from infrafabric.coordinator.formats._common import EXTENSION, EXTENSION_FIELDS
from infrafabric.coordinator.models import TaskSpec, TaskStatus, check_path_glob

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_CHECKBOX = re.compile(r"^\s*[-*+]\s+\[(?P<mark>[^\]]{0,3})\]\s*(?P<rest>.*)$")
ID_PATTERN = r"[A-Za-z]{1,16}-?[0-9]+(?:\.[0-9]+)*"
_ID = re.compile(rf"^(?P<id>{ID_PATTERN})(?=\s|$)")
_PARALLEL = re.compile(r"(?:^|\s)\[P\](?=\s|$)")
_EXPLICIT = re.compile(
    r"\s*\((?:(?P<only>depends\s+only\s+on)|(?P<add>depends\s+on)|(?P<none>no\s+dependencies))"
    r"\s*:?\s*(?P<ids>[^()]*)\)\s*$",
    re.IGNORECASE,
)
_PATH = re.compile(r"`([^`\s]+)`|(?<![\w/.:@-])((?:[\w.*-]+/)+[\w.*-]*)")
_COMMENT = re.compile(r"\s*<!--\s*" + EXTENSION + r":\s*(\{.*\})\s*-->\s*$")
#: the task fields a task line carries in its ``<!-- infrafabric: {...} -->`` comment
_LINE_FIELDS = EXTENSION_FIELDS | {"description", "acceptance_criteria"}
_STORY = re.compile(r"\buser\s+story\b", re.IGNORECASE)


@dataclass
class _Phase:
    title: str | None
    story: bool
    steps: list[list[str]] = field(default_factory=list)
    last_parallel: bool = False


@dataclass
class _Flow:
    """The structural dependency rule, shared by the reader and the writer."""

    barrier: list[str] = field(default_factory=list)
    story_exits: list[str] = field(default_factory=list)
    phase: _Phase | None = None
    entry: list[str] = field(default_factory=list)

    def start(self, title: str | None) -> None:
        self.end()
        story = title is not None and _STORY.search(title) is not None
        self.phase = _Phase(title, story)
        self.entry = list(self.barrier) if story else (list(self.story_exits) or list(self.barrier))

    def end(self) -> None:
        phase = self.phase
        self.phase = None
        if phase is None or not phase.steps:
            return
        exit_ = list(phase.steps[-1])
        if phase.story:
            self.story_exits += exit_
        else:
            self.barrier, self.story_exits = exit_, []

    def options(self) -> tuple[list[str], list[str]]:
        """(dependencies as a [P] task, dependencies as a sequential task) of the next task."""
        assert self.phase is not None
        steps = self.phase.steps
        if not steps:
            return list(self.entry), list(self.entry)
        seq = list(steps[-1])
        if self.phase.last_parallel:
            return (list(steps[-2]) if len(steps) > 1 else list(self.entry)), seq
        return seq, seq

    def add(self, task_id: str, parallel: bool) -> None:
        assert self.phase is not None
        if parallel and self.phase.last_parallel:
            self.phase.steps[-1].append(task_id)
        else:
            self.phase.steps.append([task_id])
        self.phase.last_parallel = parallel


def paths_in(text: str) -> list[str]:
    """The file paths a task line names: backquoted, or words with a ``/``."""
    found: list[str] = []
    for m in _PATH.finditer(text):
        candidate = (m.group(1) or m.group(2) or "").rstrip(".,;:)")
        if "/" not in candidate and m.group(1) is None:
            continue
        if "://" in candidate or candidate.startswith(("http", "www.")):
            continue
        if candidate.endswith("/"):
            candidate += "**"  # a directory: everything in it
        try:
            path = check_path_glob(candidate)
        except ValueError:
            continue
        if path not in found and len(found) < 100 and len(path) <= 500:
            found.append(path)
    return found


def read(text: str, source: str) -> Board:
    p = Problems(source)
    flow = _Flow()
    raws: list[RawTask] = []
    fence: str | None = None
    in_phase = False
    section: str | None = None
    flow.start(None)
    for number, line in enumerate(text.split("\n"), 1):
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        m = _FENCE.match(line)
        if m:
            fence = m.group(1)
            continue
        heading = _HEADING.match(line)
        if heading and len(heading.group(1)) <= 2:
            title = heading.group(2).strip()
            section = title if len(heading.group(1)) == 2 else None
            in_phase = section is not None and re.match(r"phase\b", section, re.IGNORECASE) is not None
            flow.start(section)
            continue
        box = _CHECKBOX.match(line)
        if box is None:
            continue
        rest = box.group("rest").strip()
        task = _ID.match(rest)
        if task is None:
            if in_phase:
                p.error("a checklist item in a phase has no task id (expected '- [ ] T001 Description')",
                        line=number)
            continue
        task_id = task.group("id")
        raw = RawTask(line=number, label=task_id, data={"id": task_id}, id=task_id)
        mark = box.group("mark")
        if mark not in (" ", "x", "X"):
            p.error(f"checkbox [{mark}] is neither [ ] nor [x]", line=number, task=task_id)
            raw.ok = False
        body = rest[task.end():]
        extension: dict[str, Any] = {}
        comment = _COMMENT.search(body)
        if comment:
            body = body[: comment.start()]
            try:
                extension = json.loads(comment.group(1))
                if not isinstance(extension, dict) or set(extension) - _LINE_FIELDS - {"id"}:
                    raise ValueError(f"it may hold only {', '.join(sorted(_LINE_FIELDS))}")
            except (ValueError, RecursionError) as exc:
                p.error(f"the {EXTENSION} comment is not usable: {exc}", line=number, task=task_id)
                raw.ok, extension = False, {}
        parallel = _PARALLEL.search(body) is not None
        body = " ".join(_PARALLEL.sub(" ", body).split())
        explicit = _EXPLICIT.search(body)
        structural = flow.options()[0 if parallel else 1]
        deps = structural
        if explicit:
            body = body[: explicit.start()].rstrip()
            ids = [t.strip() for t in re.split(r",|;|\s+and\s+", explicit.group("ids")) if t.strip()]
            if explicit.group("none") or (explicit.group("only") and ids in (["nothing"], ["none"])):
                ids = []
            if explicit.group("none") and explicit.group("ids").strip():
                p.error(f"'(no dependencies ...)' lists ids: {explicit.group('ids').strip()!r}", line=number,
                        task=task_id)
                raw.ok = False
            deps = ids if not explicit.group("add") else structural + [i for i in ids if i not in structural]
        if not body:
            p.error("the task has no description (expected '- [ ] T001 Description')", line=number,
                    task=task_id)
            raw.ok = False
        raw.data["title"] = body or "?"  # an empty one is reported above
        if section is not None:
            raw.data["section"] = section
        if deps:
            raw.data["dependencies"] = deps
        found = paths_in(body)
        if found:
            raw.data["paths"] = found
        own_id = extension.pop("id", None)
        if isinstance(own_id, str):
            raw.data["_id"] = own_id  # a task renumbered by the export: its own id
        raw.data.update(extension)
        if raw.data.get("section", "") is None:
            del raw.data["section"]
        if mark in ("x", "X"):
            raw.status, raw.status_word = TaskStatus.COMPLETED, "[x]"
        flow.add(task_id, parallel)
        raws.append(raw)
    if not raws and not p.errors:
        p.error("no tasks found (expected lines like '- [ ] T001 [P] Description' under '## Phase 1: ...')")
    renamed = {raw.id: raw.data.pop("_id") for raw in raws if raw.id and "_id" in raw.data}
    if renamed:
        for raw in raws:
            if raw.id in renamed:
                raw.id = raw.label = raw.data["id"] = renamed[raw.id]
            if "dependencies" in raw.data:
                raw.data["dependencies"] = [renamed.get(d, d) for d in raw.data["dependencies"]]
    return build_board(raws, p, fmt="speckit")


# --------------------------------------------------------------------------- export


def export(tasks: Sequence[TaskSpec], statuses: Mapping[str, TaskStatus | str] | None = None,
           *, title: str = "Tasks") -> str:
    """The tasks as a Spec Kit ``tasks.md`` that reads back to the same ids,
    titles, sections and dependencies (``[P]`` and phases where the structure
    says it, ``(depends ...)`` where it cannot)."""
    originals: dict[str, str] = {}
    if any(not re.fullmatch(ID_PATTERN, t.id) for t in tasks):
        # ids a task line cannot start with (task-master's 1.2): T001, T002, ... each keeping its own
        number = {t.id: f"T{i:03}" for i, t in enumerate(tasks, 1)}
        originals = {v: k for k, v in number.items()}
        tasks = [t.model_copy(update={"id": number[t.id], "dependencies": [number.get(d, d) for d in
                                                                           t.dependencies]}) for t in tasks]
        statuses = {number[k]: v for k, v in (statuses or {}).items() if k in number}
    out = [f"# {title}", "", "**Format**: `[ID] [P?] [Story] Description` (written by ifctl board export)",
           ""]
    flow = _Flow()
    phase_number = 0
    for run in section_runs(tasks):
        section = run[0].section
        if section is not None and re.match(r"phase\b", section, re.IGNORECASE):
            heading = section
        else:
            phase_number += 1
            heading = f"Phase {phase_number}: {section or 'Tasks'}"
        flow.start(heading)
        out += [f"## {heading}", ""]
        for index, task in enumerate(run):
            as_parallel, as_sequential = flow.options()
            deps = list(task.dependencies)
            if as_parallel == as_sequential:
                after = run[index + 1] if index + 1 < len(run) else None
                parallel = deps == as_parallel and after is not None and list(after.dependencies) == deps
                structural = as_parallel
            elif deps == as_parallel:
                parallel, structural = True, as_parallel
            else:
                parallel, structural = False, as_sequential
            note = ""
            if deps != structural:
                added = deps[len(structural):]
                if deps[: len(structural)] == structural and added:
                    note = f" (depends on {', '.join(added)})"
                elif deps:
                    note = f" (depends only on {', '.join(deps)})"
                else:
                    note = " (no dependencies)"
            status = (statuses or {}).get(task.id)
            done = status is not None and str(status).lower() == TaskStatus.COMPLETED.value
            marker = " [P]" if parallel else ""
            title = " ".join(task.title.split())
            extra = {k: v for k, v in task.model_dump(mode="json", exclude_defaults=True).items()
                     if k in _LINE_FIELDS and k not in ("paths", "section")}
            if paths_in(title) != task.paths:
                extra["paths"] = list(task.paths)
            if task.section != heading:
                extra["section"] = task.section
            if task.id in originals:
                extra["id"] = originals[task.id]
            if extra:  # what a task line has no place for, in a comment markdown does not show
                text = json.dumps(extra, ensure_ascii=False, separators=(", ", ": ")).replace(">", "\\u003e")
                note += f" <!-- {EXTENSION}: {text} -->"
            out.append(f"- [{'x' if done else ' '}] {task.id}{marker} {title}{note}")
            flow.add(task.id, parallel)
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def looks_like(text: str) -> bool:
    """Content sniffing: ``- [ ] T001 ...`` lines and no board table."""
    return re.search(rf"^\s*[-*]\s+\[[ xX]\]\s+{ID_PATTERN}\s", text, re.MULTILINE) is not None and (
        re.search(r"^##\s+Phase\b", text, re.MULTILINE | re.IGNORECASE) is not None
        or re.search(r"^\s*[-*]\s+\[[ xX]\]\s+T[0-9]{3}\s", text, re.MULTILINE) is not None
    ) and re.search(r"^\s*\|.*\|\s*$", text, re.MULTILINE) is None
