"""Backlog.md: a ``backlog/tasks/`` directory of ``task-12 - Title.md`` files.

Each file is YAML front matter (``id``, ``title``, ``status``, ``assignee``,
``labels``, ``dependencies``, ``priority``, ``parent_task_id``, ...) and a
markdown body with ``## Description`` and ``## Acceptance Criteria``
(``- [ ] #1 ...``, between ``<!-- AC:BEGIN -->`` and ``<!-- AC:END -->`` in
newer versions). See ``docs/board-format.md`` for the mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from infrafabric.bus.bounds import read_limited
from infrafabric.coordinator.board import (
    MAX_BOARD_BYTES,
    Board,
    Problems,
    RawTask,
    build_board,
    parse_status,
)
from infrafabric.coordinator.formats._common import (
    EXTENSION,
    EXTENSION_FIELDS,
    PRIORITY_WORDS,
    capability_label,
    label_capabilities,
    node_lines,
    priority_word,
    shorten,
)
from infrafabric.coordinator.models import TaskSpec, TaskStatus
from infrafabric.errors import BoardError, ConfigurationError

#: Backlog.md status -> the board's status claim (None: derived from dependencies)
STATUSES: dict[str, TaskStatus | None] = {"to do": None, "todo": None, "in progress": TaskStatus.CLAIMED,
                                          "done": TaskStatus.COMPLETED}
_EXPORT_STATUS = {TaskStatus.COMPLETED: "Done", TaskStatus.CLAIMED: "In Progress"}
#: Backlog.md's task file names: ``task-12 - Title.md``, ``task-4.1 - Title.md``, ``BACK-208 - Title.md``
_TASK_FILE = re.compile(r"^(?:[A-Za-z0-9._\-:@+=~]{1,128} - .*|[A-Za-z]+-[0-9]+(?:\.[0-9]+)*)\.md$",
                        re.IGNORECASE)
_FILE_ID = re.compile(r"^([A-Za-z]+-[0-9]+(?:\.[0-9]+)*)(?: - |$)")
_AC_ITEM = re.compile(r"^\s*[-*]\s+\[[ xX]\]\s+(?:#[0-9]+\s+)?(.*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?:AC|SECTION:[A-Z_]+):(?:BEGIN|END)\s*-->\s*$")
#: the most task files one directory may hold
MAX_FILES = 100_000


def _split(text: str) -> tuple[str | None, str, int]:
    """(front matter, body, line of the body's first line); front matter None when there is none."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        return None, text, 1
    for i in range(1, len(lines)):
        if lines[i].strip() in ("---", "..."):
            return "\n".join(lines[1:i]), "\n".join(lines[i + 1:]), i + 2
    return "\n".join(lines[1:]), "", len(lines) + 1


def read_file(text: str, source: str, p: Problems, *, done: bool = False) -> RawTask | None:
    """One task file as a raw task (``source`` names it in messages)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    front, body, _body_line = _split(text)
    if front is None:
        p.error("no YAML front matter (a Backlog.md task file starts with a '---' line)", line=1,
                source=source)
        return None
    try:
        meta = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        p.error(f"front matter is not valid YAML: {problem}", line=mark.line + 2 if mark is not None else 1,
                source=source)
        return None
    except (RecursionError, ValueError) as exc:
        p.error(f"front matter is not usable YAML: {exc}", line=1, source=source)
        return None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        p.error("front matter must be a mapping of fields", line=2, source=source)
        return None
    node = node_lines(front, line_offset=1)
    task_id = meta.get("id")
    if task_id is None:
        m = _FILE_ID.match(Path(source).name)
        task_id = m.group(1) if m else None
    if not isinstance(task_id, str | int) or isinstance(task_id, bool) or not str(task_id).strip():
        problem = "missing required field 'id'" if task_id is None else (
            f"field 'id' must be a task id like task-12, got {shorten(task_id)}")
        p.error(problem, line=node.at("id") or 2, source=source)
        return None
    task_id = str(task_id).strip()
    raw = RawTask(line=node.at("id") or 2, label=task_id, data={"id": task_id}, id=task_id,
                  field_lines=dict(node.key_lines), source=source)

    def bad(message: str, key: str) -> None:
        p.error(message, line=node.at(key) or raw.line, task=task_id, source=source)
        raw.ok = False

    def names(key: str) -> list[str]:
        value = meta.get(key)
        if value is None or value == "":
            return []
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
            bad(f"field {key!r} must be a list of names, got {shorten(value)}", key)
            return []
        return [str(v).strip() for v in value if str(v).strip()]

    title = meta.get("title")  # a missing one is reported by the validation
    if title is not None and not isinstance(title, str | int | float):
        bad(f"field 'title' must be a string, got {shorten(title)}", "title")
        raw.data["title"] = "?"
    elif title is not None:
        raw.data["title"] = str(title).strip()
    status = meta.get("status")
    if done:
        raw.status, raw.status_word = TaskStatus.COMPLETED, "Done"
    elif status is not None:
        word = " ".join(str(status).lower().split())
        if word in STATUSES:
            raw.status = STATUSES[word]
            raw.status_word = str(status) if raw.status is not None else None
        else:
            try:
                parsed = parse_status(str(status))
            except ValueError:
                parsed = None
            if parsed is None:
                p.warn(f"status {str(status)!r} is not To Do, In Progress or Done: read as To Do",
                       line=node.at("status"), task=task_id, source=source)
            else:
                raw.status, raw.status_word = parsed
    assignees = names("assignee")
    if assignees:
        raw.owner = assignees[0].removeprefix("@")
    capabilities = label_capabilities(names("labels"), lambda problem: bad(problem, "labels"))
    if capabilities:
        raw.data["capabilities"] = capabilities
    deps = names("dependencies")
    if deps:
        raw.data["dependencies"] = list(dict.fromkeys(deps))
    priority = meta.get("priority")
    if priority is not None:
        if not isinstance(priority, str) or priority.strip().lower() not in PRIORITY_WORDS:
            bad(f"field 'priority' must be high, medium or low, got {shorten(priority)}", "priority")
        else:
            raw.data["priority"] = PRIORITY_WORDS[priority.strip().lower()]
    extension = meta.get(EXTENSION)
    if extension is not None and not isinstance(extension, dict):
        bad(f"field {EXTENSION!r} must be a mapping of task fields, got {shorten(extension)}", EXTENSION)
    elif extension is not None:
        for key, value in extension.items():
            if key in EXTENSION_FIELDS:
                raw.data[key] = value
            else:
                bad(f"{EXTENSION}: unknown field {key!r} (expected {', '.join(sorted(EXTENSION_FIELDS))})",
                    EXTENSION)
    ordinal = meta.get("ordinal")
    if isinstance(ordinal, int | float) and not isinstance(ordinal, bool):
        raw.data["_ordinal"] = ordinal
    parent = meta.get("parent_task_id", meta.get("parent"))
    if parent is not None and str(parent).strip():
        raw.data["_parent"] = str(parent).strip()
        raw.field_lines["_parent"] = node.at("parent_task_id")

    description, criteria = _read_body(body)
    if description:
        raw.data["description"] = description
    if criteria:
        raw.data["acceptance_criteria"] = criteria
    return raw


def _read_body(body: str) -> tuple[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in body.split("\n"):
        heading = re.match(r"^##\s+(.*?)\s*#*\s*$", line)
        if heading:
            current = re.sub(r"\s*\(optional\)\s*$", "", heading.group(1).strip().lower())
            sections.setdefault(current, [])
            continue
        if _MARKER.match(line):
            continue
        sections.setdefault(current, []).append(line)
    description = "\n".join(sections.get("description", sections.get("", []))).strip()
    criteria = []
    for line in sections.get("acceptance criteria", []):
        m = _AC_ITEM.match(line)
        if m and m.group(1).strip():
            criteria.append(m.group(1).strip())
    return description, criteria


def _finish(raws: list[RawTask], p: Problems) -> Board:
    """Resolve short dependency ids (``12`` or ``TASK-12`` for ``task-12``) and parents, then validate."""
    # Backlog.md's board order (``ordinal``) first, then id order
    raws = sorted(raws, key=lambda r: r.data.get("_ordinal", float("inf")))
    for raw in raws:
        raw.data.pop("_ordinal", None)
    known = {r.id: r.id for r in raws if r.id}
    folded = {r.id.lower(): r.id for r in raws if r.id}
    children: dict[str, list[str]] = {}
    for raw in raws:
        parent = raw.data.pop("_parent", None)
        if parent is not None and raw.id:
            target = _lookup(parent, known, folded)
            if target is None:
                p.error(f"parent_task_id {parent!r} is not a task of the backlog",
                        line=raw.field_lines.get("_parent") or raw.line, task=raw.label, source=raw.source)
                raw.ok = False
            else:
                children.setdefault(target, []).append(raw.id)
        deps = raw.data.get("dependencies")
        if deps:
            raw.data["dependencies"] = list(dict.fromkeys(_lookup(d, known, folded) or d for d in deps))
    for raw in raws:
        if raw.id in children:
            deps = raw.data.setdefault("dependencies", [])
            deps += [c for c in children[raw.id] if c not in deps]
    return build_board(raws, p, fmt="backlog")


def _lookup(ref: str, known: Mapping[str, str], folded: Mapping[str, str]) -> str | None:
    if ref in known:
        return known[ref]
    for candidate in (ref.lower(), f"task-{ref}".lower()):
        if candidate in folded:
            return folded[candidate]
    return None


def read(text: str, source: str) -> Board:
    """One task file."""
    p = Problems(source)
    raw = read_file(text, source, p)
    return _finish([raw] if raw is not None else [], p)


def _order(path: Path) -> tuple[int, tuple[int, ...], str]:
    m = re.match(r"^[A-Za-z]+-([0-9]+(?:\.[0-9]+)*)", path.name)
    if m:
        return 0, tuple(int(x) for x in m.group(1).split(".")), path.name
    return 1, (), path.name


def load_dir(path: Path) -> Board:
    """``backlog/`` (its ``tasks/`` and ``completed/``; or the directory holding ``backlog/``),
    ``backlog/tasks/``, or a directory of task files."""
    where = str(path)
    p = Problems(where)
    folders: list[tuple[Path, bool]] = []
    if not (path / "tasks").is_dir() and (path / "backlog" / "tasks").is_dir():
        path = path / "backlog"  # the project's top
    if (path / "tasks").is_dir():
        folders.append((path / "tasks", False))
        if (path / "completed").is_dir():
            folders.append((path / "completed", True))
    else:
        folders.append((path, False))
    files: list[tuple[Path, bool]] = []
    for folder, done in folders:
        try:
            found = sorted((f for f in folder.iterdir() if _TASK_FILE.match(f.name) and f.is_file()),
                           key=_order)
        except OSError as exc:
            raise BoardError([f"{folder}: cannot read the directory: {exc.strerror or exc}"]) from exc
        files += [(f, done) for f in found]
    if not files:
        raise BoardError([f"{where}: cannot read the board: a directory without Backlog.md task files "
                          "(task-12 - Title.md); a directory board is Backlog.md's backlog/ or "
                          "backlog/tasks/"],
                         hint="see docs/board-format.md, Backlog.md")
    if len(files) > MAX_FILES:
        raise BoardError([f"{where}: more than {MAX_FILES} task files"])
    raws: list[RawTask] = []
    for file, done in files:
        name = str(file)
        try:
            data = read_limited(file, what="task file", limit=MAX_BOARD_BYTES)
            text = data.decode("utf-8")
        except ConfigurationError as exc:
            p.error(exc.message, source=name)
            continue
        except OSError as exc:
            p.error(f"cannot read the file: {exc.strerror or exc}", source=name)
            continue
        except UnicodeDecodeError as exc:
            p.error(f"not UTF-8 text (byte {exc.start})", source=name)
            continue
        raw = read_file(text, name, p, done=done)
        if raw is not None:
            raws.append(raw)
    return _finish(raws, p)


# --------------------------------------------------------------------------- export


def _slug(title: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-.")
    return slug[:80].rstrip("-.") or "task"


def file_name(task: TaskSpec) -> str:
    return f"{task.id} - {_slug(task.title)}.md"


def export_files(tasks: Sequence[TaskSpec], statuses: Mapping[str, TaskStatus | str] | None = None,
                 owners: Mapping[str, str] | None = None, *, now: datetime | None = None) -> dict[str, str]:
    """File name -> content of each task file (for ``backlog/tasks/``)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M")
    files: dict[str, str] = {}
    for ordinal, task in enumerate(tasks, 1):
        status = (statuses or {}).get(task.id)
        word = "To Do"
        if status is not None:
            try:
                word = _EXPORT_STATUS.get(TaskStatus(status), "To Do")
            except ValueError:
                word = "To Do"
        owner = (owners or {}).get(task.id)
        meta: dict[str, Any] = {
            "id": task.id,
            "title": task.title,
            "status": word,
            "assignee": [f"@{owner}"] if owner else [],
            "created_date": stamp,
            "labels": [capability_label(c) for c in task.capabilities],
            "dependencies": list(task.dependencies),
            "ordinal": ordinal * 1000,
        }
        if task.priority:
            meta["priority"] = priority_word(task.priority, critical=False)
        extra = {k: v for k, v in task.model_dump(mode="json", exclude_defaults=True).items()
                 if k in EXTENSION_FIELDS and not (k == "priority" and v in (-1, 0, 1))}
        if extra:
            meta[EXTENSION] = extra
        front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
        body = ["---", front.rstrip("\n"), "---", ""]
        if task.description:
            body += ["## Description", "", "<!-- SECTION:DESCRIPTION:BEGIN -->", task.description.strip(),
                     "<!-- SECTION:DESCRIPTION:END -->", ""]
        if task.acceptance_criteria:
            body += ["## Acceptance Criteria", "<!-- AC:BEGIN -->"]
            body += [f"- [ ] #{n} {' '.join(c.split())}" for n, c in enumerate(task.acceptance_criteria, 1)]
            body += ["<!-- AC:END -->", ""]
        name = file_name(task)
        if name in files:
            raise BoardError([f"task {task.id}: two tasks would be written to {name!r}"])
        files[name] = "\n".join(body).rstrip("\n") + "\n"
    return files


def export_dir(tasks: Sequence[TaskSpec], out: Path, statuses: Mapping[str, TaskStatus | str] | None = None,
               owners: Mapping[str, str] | None = None, *, now: datetime | None = None) -> list[Path]:
    """Write one file per task into ``out`` (e.g. ``backlog/tasks``), refusing to overwrite any
    existing file: nothing is written then."""
    files = export_files(tasks, statuses, owners, now=now)
    if out.exists() and not out.is_dir():
        raise BoardError([f"{out}: not a directory"])
    clashes = [name for name in files if (out / name).exists()]
    if clashes:
        shown = ", ".join(clashes[:5]) + (f" and {len(clashes) - 5} more" if len(clashes) > 5 else "")
        raise BoardError([f"{out}: {len(clashes)} task files already exist, nothing written: {shown}"],
                         hint="export into an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        target = out / name
        try:
            with open(target, "x", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise BoardError([f"{target}: cannot write: {exc.strerror or exc}"]) from exc
        written.append(target)
    return written


def looks_like(text: str) -> bool:
    """Content sniffing: front matter with an ``id:`` and a ``title:``."""
    front, _body, _line = _split(text.lstrip("\ufeff"))
    return front is not None and re.search(r"^id\s*:", front, re.MULTILINE) is not None and re.search(
        r"^title\s*:", front, re.MULTILINE) is not None
