"""task-master (claude-task-master): ``.taskmaster/tasks/tasks.json``.

Tagged (``{"master": {"tasks": [...], "metadata": {...}}, "feature-x": {...}}``)
and legacy (``{"tasks": [...]}``) files are read. Task ``N`` of the ``master``
tag (or of a legacy file) is task ``N``; of another tag ``TAG``, ``TAG:N``.
Subtask ``M`` of task ``N`` is task ``N.M``: it depends on what it lists
(an integer is a sibling subtask, ``"P.S"`` a subtask of another task) and on
its parent's dependencies, and the parent depends on all its subtasks (it is
done when they are). See ``docs/board-format.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from infrafabric.coordinator.board import Board, Problems, RawTask, build_board
from infrafabric.coordinator.formats._common import (
    EXTENSION,
    EXTENSION_FIELDS,
    PRIORITY_WORDS,
    Node,
    load_json,
    node_lines,
    priority_word,
    shorten,
)
from infrafabric.coordinator.models import TaskSpec, TaskStatus
from infrafabric.errors import BoardError

DEFAULT_TAG = "master"

#: task-master status -> the board's status claim (None: derived from dependencies)
STATUSES: dict[str, TaskStatus | None] = {
    "pending": None,
    "todo": None,
    "deferred": None,
    "in-progress": TaskStatus.CLAIMED,
    "review": TaskStatus.CLAIMED,
    "blocked": TaskStatus.BLOCKED,
    "done": TaskStatus.COMPLETED,
    "completed": TaskStatus.COMPLETED,
    "cancelled": TaskStatus.CANCELLED,
}
_EXPORT_STATUS = {
    TaskStatus.COMPLETED: "done",
    TaskStatus.CLAIMED: "in-progress",
    TaskStatus.CANCELLED: "cancelled",
}
_DETAILS = "\n\nDetails:\n"
_EXTENSION_FIELDS = EXTENSION_FIELDS
_TASK_ID = re.compile(
    r"^(?:(?P<tag>[A-Za-z0-9._\-@+=~]+):)?(?P<n>[1-9][0-9]{0,8})(?:\.(?P<s>[1-9][0-9]{0,8}))?$"
)


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"[1-9][0-9]{0,8}", value.strip()):
        return int(value)
    return None


def read(text: str, source: str) -> Board:
    p = Problems(source)
    data = load_json(text, p, "task-master tasks.json")
    if data is None:
        return build_board([], p, fmt="taskmaster")
    nodes = node_lines(text)
    tags: list[tuple[str, Any, Node]] = []
    if isinstance(data, dict) and "tasks" in data:
        tags.append((DEFAULT_TAG, data["tasks"], nodes.key("tasks")))
    elif isinstance(data, dict) and data:
        for tag, value in data.items():
            node = nodes.key(str(tag))
            if not isinstance(value, dict) or "tasks" not in value:
                p.error(f"tag {tag!r} has no 'tasks' list (expected {{\"{tag}\": {{\"tasks\": [...]}}}})",
                        line=nodes.at(str(tag)) or None)
                continue
            tags.append((str(tag), value["tasks"], node.key("tasks")))
    else:
        p.error("expected a task-master tasks.json: {\"master\": {\"tasks\": [...]}} or {\"tasks\": [...]}",
                line=1)
    raws: list[RawTask] = []
    for tag, tasks, node in tags:
        if not isinstance(tasks, list):
            p.error(f"'tasks' of tag {tag!r} must be a list, got {shorten(tasks)}", line=node.line or None)
            continue
        raws += _read_tag(tag, tasks, node, p)
    return build_board(raws, p, fmt="taskmaster")


def _read_tag(tag: str, tasks: list[Any], nodes: Node, p: Problems) -> list[RawTask]:
    prefix = "" if tag == DEFAULT_TAG else f"{tag}:"
    raws: list[RawTask] = []
    # (raw, explicit dependency values, parent number or None, node)
    pending: list[tuple[RawTask, Any, int | None, Node]] = []
    subtask_ids: dict[int, list[str]] = {}
    parent_deps: dict[int, list[str]] = {}
    top_ids: set[int] = set()
    for index, task in enumerate(tasks):
        node = nodes.item(index)
        raw = _read_task(task, node, prefix, None, index, p)
        if raw is None:
            continue
        raws.append(raw)
        number = int(raw.id.rsplit(":", 1)[-1]) if raw.id else 0
        top_ids.add(number)
        pending.append((raw, task.get("dependencies"), None, node))
        subtasks = task.get("subtasks") or []
        if not isinstance(subtasks, list):
            p.error(f"field 'subtasks' must be a list, got {shorten(subtasks)}", line=node.at("subtasks"),
                    task=raw.label)
            raw.ok = False
            continue
        for sub_index, sub in enumerate(subtasks):
            sub_node = node.key("subtasks").item(sub_index)
            sub_raw = _read_task(sub, sub_node, prefix, number, sub_index, p)
            if sub_raw is None:
                continue
            raws.append(sub_raw)
            subtask_ids.setdefault(number, []).append(sub_raw.id or "")
            pending.append((sub_raw, sub.get("dependencies"), number, sub_node))

    for raw, deps, parent, node in pending:
        resolved: list[str] = []
        if deps is not None and not isinstance(deps, list):
            p.error(f"field 'dependencies' must be a list, got {shorten(deps)}", line=node.at("dependencies"),
                    task=raw.label)
            raw.ok = False
            deps = []
        for dep in deps or []:
            target = _resolve(dep, parent, prefix, subtask_ids, top_ids)
            if target is None:
                p.error(f"dependency {shorten(dep)} is not a task id (a number, or \"N.M\" for a subtask)",
                        line=node.at("dependencies"), task=raw.label)
                raw.ok = False
            elif target not in resolved:
                resolved.append(target)
        if parent is None:
            number = int((raw.id or "0").rsplit(":", 1)[-1])
            parent_deps[number] = list(resolved)
            resolved += [s for s in subtask_ids.get(number, []) if s not in resolved]
        raw.data["dependencies"] = resolved
    for raw, _deps, parent, _node in pending:
        if parent is not None:
            inherited = [d for d in parent_deps.get(parent, []) if d not in raw.data["dependencies"]]
            raw.data["dependencies"] += inherited
    renamed = {raw.id: raw.data.pop("_id") for raw in raws if raw.id and "_id" in raw.data}
    if renamed:  # tasks written from another board keep their own ids (see EXTENSION)
        for raw in raws:
            if raw.id in renamed:
                raw.id = raw.label = raw.data["id"] = renamed[raw.id]
            raw.data["dependencies"] = [renamed.get(d, d) for d in raw.data.get("dependencies", [])]
    return raws


def _resolve(dep: Any, parent: int | None, prefix: str, subtask_ids: Mapping[int, list[str]],
             top_ids: set[int]) -> str | None:
    if isinstance(dep, str) and "." in dep:
        m = re.fullmatch(r"([1-9][0-9]{0,8})\.([1-9][0-9]{0,8})", dep.strip())
        return f"{prefix}{int(m.group(1))}.{int(m.group(2))}" if m else None
    number = _number(dep)
    if number is None:
        return None
    if parent is not None:
        sibling = f"{prefix}{parent}.{number}"
        if sibling in subtask_ids.get(parent, []) or number not in top_ids:
            return sibling
    return f"{prefix}{number}"


def _read_task(task: Any, node: Node, prefix: str, parent: int | None, index: int,
               p: Problems) -> RawTask | None:
    where = f"subtask {index + 1} of task {parent}" if parent is not None else f"task {index + 1} of the list"
    if not isinstance(task, dict):
        p.error(f"{where} is not an object", line=node.line or None)
        return None
    number = _number(task.get("id"))
    if number is None:
        problem = "missing required field 'id'" if "id" not in task else (
            f"field 'id' must be a positive whole number, got {shorten(task.get('id'))}")
        p.error(f"{where}: {problem}", line=node.at("id") or None)
        return None
    task_id = f"{prefix}{parent}.{number}" if parent is not None else f"{prefix}{number}"
    raw = RawTask(line=node.line, label=task_id, data={"id": task_id}, id=task_id,
                  field_lines=dict(node.key_lines))

    def bad(message: str, key: str) -> None:
        p.error(message, line=node.at(key) or None, task=task_id)
        raw.ok = False

    def text(key: str) -> str | None:
        value = task.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            bad(f"field {key!r} must be a string, got {shorten(value)}", key)
            return None
        return value.strip()

    title = text("title")  # a missing one is reported by the validation
    if title is not None or task.get("title") is not None:
        raw.data["title"] = title if title is not None else "?"
    description = text("description") or ""
    details = text("details")
    if details:
        description += _DETAILS + details if description else "Details:\n" + details
    if description:
        raw.data["description"] = description
    strategy = text("testStrategy")
    if strategy:
        lines = [line.strip() for line in strategy.split("\n") if line.strip()]
        if len(lines) > 1 and all(line.startswith("- ") for line in lines):
            raw.data["acceptance_criteria"] = [line[2:].strip() for line in lines]
        else:
            raw.data["acceptance_criteria"] = [strategy]
    priority = task.get("priority")
    if priority is not None:
        if not isinstance(priority, str) or priority.strip().lower() not in PRIORITY_WORDS:
            bad(f"field 'priority' must be high, medium or low, got {shorten(priority)}", "priority")
        else:
            raw.data["priority"] = PRIORITY_WORDS[priority.strip().lower()]
    extension = task.get(EXTENSION)
    if extension is not None and not isinstance(extension, dict):
        bad(f"field {EXTENSION!r} must be a mapping of task fields, got {shorten(extension)}", EXTENSION)
    elif extension is not None:
        for key, value in extension.items():
            if key == "id" and isinstance(value, str):
                raw.data["_id"] = value
            elif key in _EXTENSION_FIELDS:
                raw.data[key] = value
            else:
                bad(f"{EXTENSION}: unknown field or bad id {key!r}", EXTENSION)
    status = task.get("status")
    if status is not None:
        word = status.strip().lower() if isinstance(status, str) else None
        if word not in STATUSES:
            bad(f"field 'status' must be one of {', '.join(STATUSES)}, got {shorten(status)}", "status")
        elif word is not None:
            raw.status, raw.status_word = STATUSES[word], word
            if raw.status is None:
                raw.status_word = None
    return raw


# --------------------------------------------------------------------------- export


def export(tasks: Sequence[TaskSpec], statuses: Mapping[str, TaskStatus | str] | None = None,
           *, now: datetime | None = None) -> str:
    """The tasks as a tagged ``tasks.json`` task-master reads, which :func:`read` reads back
    to the same tasks.

    Task-master shaped ids (``N``, ``N.M`` after task ``N``, ``TAG:N``,
    ``TAG:N.M``) are kept when the file reads back to the same tasks; otherwise
    the tasks are numbered 1, 2, ... in board order, each keeping its own id
    under ``"infrafabric"``. The fields task-master has no place for
    (capabilities, kind, estimate, model, deliverable, budget, section, paths,
    branch, a priority other than critical/high/medium/low) go there too.
    """
    text = _export(tasks, statuses, now=now, numbered=False)
    if text is not None:
        try:
            if read(text, "<export>").tasks == list(tasks):
                return text
        except BoardError:
            pass
    number = {t.id: str(i) for i, t in enumerate(tasks, 1)}
    renumbered = [t.model_copy(update={"id": number[t.id], "dependencies": [number.get(d, d) for d in
                                                                             t.dependencies]}) for t in tasks]
    originals = {number[t.id]: t.id for t in tasks}
    text = _export(renumbered, {number[k]: v for k, v in (statuses or {}).items() if k in number}, now=now,
                   numbered=True, originals=originals)
    assert text is not None
    return text


def _export(tasks: Sequence[TaskSpec], statuses: Mapping[str, TaskStatus | str] | None, *,
            now: datetime | None, numbered: bool, originals: Mapping[str, str] | None = None) -> str | None:
    """The file, or None when the ids cannot be written as they are (``numbered`` False)."""
    problems: list[str] = []
    tags: dict[str, list[dict[str, Any]]] = {}
    parents: dict[str, dict[str, Any]] = {}
    by_id = {t.id: t for t in tasks}
    sub_of: dict[str, list[str]] = {}
    for task in tasks:
        m = _TASK_ID.match(task.id)
        if m and m.group("s"):
            sub_of.setdefault(f"{m.group('tag') + ':' if m.group('tag') else ''}{m.group('n')}", []).append(
                task.id)
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for task in tasks:
        m = _TASK_ID.match(task.id)
        if m is None:
            problems.append(f"task {task.id}: not a task-master id (N, N.M, TAG:N or TAG:N.M)")
            continue
        tag = m.group("tag") or DEFAULT_TAG
        if tag == DEFAULT_TAG and m.group("tag"):
            problems.append(f"task {task.id}: write master's tasks without a tag prefix")
            continue
        prefix = "" if tag == DEFAULT_TAG else f"{tag}:"
        parent_id = f"{prefix}{m.group('n')}"
        entry = _entry(task, m, prefix, by_id, sub_of, statuses, problems)
        if m.group("s"):
            parent = parents.get(parent_id)
            if parent is None:
                problems.append(f"task {task.id}: its parent task {parent_id} must come before it")
                continue
            parent.setdefault("subtasks", []).append(entry)
        else:
            entry["subtasks"] = []
            parents[parent_id] = entry
            tags.setdefault(tag, []).append(entry)
    if problems:
        if not numbered:
            return None
        raise BoardError(problems, hint="see docs/board-format.md, task-master")
    for entries in tags.values():
        for entry in entries:
            for item in [entry, *entry.get("subtasks", [])]:
                original = (originals or {}).get(item.pop("_key"))
                if original is not None:
                    item.setdefault(EXTENSION, {})["id"] = original
    out = {
        tag: {"tasks": entries, "metadata": {"created": stamp, "updated": stamp,
                                             "description": f"Tasks for {tag} context (from InfraFabric)"}}
        for tag, entries in tags.items()
    } or {DEFAULT_TAG: {"tasks": [], "metadata": {"created": stamp, "updated": stamp,
                                                  "description": "Tasks for master context"}}}
    return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


def _entry(task: TaskSpec, m: re.Match[str], prefix: str, by_id: Mapping[str, TaskSpec],
           sub_of: Mapping[str, list[str]], statuses: Mapping[str, TaskStatus | str] | None,
           problems: list[str]) -> dict[str, Any]:
    number, sub = int(m.group("n")), m.group("s")
    parent_id = f"{prefix}{number}"
    description, sep, details = task.description.partition(_DETAILS)
    if not sep and description.startswith("Details:\n"):
        description, details = "", description.removeprefix("Details:\n")
    entry: dict[str, Any] = {"id": int(sub) if sub else number, "title": task.title,
                             "description": description, "details": details}
    if len(task.acceptance_criteria) == 1:
        entry["testStrategy"] = task.acceptance_criteria[0]
    elif task.acceptance_criteria:
        entry["testStrategy"] = "\n".join(f"- {c}" for c in task.acceptance_criteria)
    else:
        entry["testStrategy"] = ""
    entry["priority"] = priority_word(task.priority)
    deps = list(task.dependencies)
    if sub:
        parent = by_id.get(parent_id)
        inherited = {d for d in (parent.dependencies if parent else []) if d not in sub_of.get(parent_id, [])}
        deps = [d for d in deps if d not in inherited]
    else:
        deps = [d for d in deps if d not in sub_of.get(parent_id, [])]
    written: list[int | str] = []
    for dep in deps:
        dm = _TASK_ID.match(dep)
        dep_prefix = f"{dm.group('tag')}:" if dm and dm.group("tag") else ""
        if dm is None or dep_prefix != prefix:
            problems.append(f"task {task.id}: dependency {dep} is not a task-master id of the same tag")
            continue
        if dm.group("s"):
            same_parent = sub and int(dm.group("n")) == number
            other = f"{int(dm.group('n'))}.{int(dm.group('s'))}"
            written.append(int(dm.group("s")) if same_parent else other)
        else:
            written.append(int(dm.group("n")))
    entry["dependencies"] = written
    status = (statuses or {}).get(task.id)
    try:
        entry["status"] = "pending" if status is None else _EXPORT_STATUS.get(TaskStatus(status), "pending")
    except ValueError:
        entry["status"] = "pending"
    if sub:
        entry["parentTaskId"] = number
    extra = {k: v for k, v in task.model_dump(mode="json", exclude_defaults=True).items()
             if k in _EXTENSION_FIELDS and not (k == "priority" and v in (-1, 0, 1, 2))}
    if extra:
        entry[EXTENSION] = extra
    entry["_key"] = task.id
    return entry


def looks_like(data: Any, source: str) -> bool:
    """Content sniffing: integer task ids, or a tagged file of ``{"tasks": [...]}`` mappings."""
    if source.replace("\\", "/").endswith(".taskmaster/tasks/tasks.json"):
        return True
    if not isinstance(data, dict) or not data:
        return False
    if "tasks" in data:
        tasks = data["tasks"]
        return (isinstance(tasks, list) and bool(tasks) and isinstance(tasks[0], dict)
                and _number(tasks[0].get("id")) is not None and "version" not in data)
    return all(isinstance(v, dict) and isinstance(v.get("tasks"), list) for v in data.values())
