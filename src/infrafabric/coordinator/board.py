"""Task boards: text in, validated :class:`~infrafabric.coordinator.models.TaskSpec` out.

A board is the file a user writes to describe the work: tasks, their
dependencies and what each one delivers. This module is pure: it reads text
(or one file, in :func:`load_board`) and never talks to a bus. Three formats
are accepted (see ``docs/board-format.md`` for the full reference):

**Markdown** (``fmt="md"``), like the Phase 0 board the project started from.
Every table whose header row has an ``ID`` column is a task table; the other
tables and everything inside fenced code blocks are ignored. Columns are found
by header name, case-insensitively:

=================  ===========================================================
header             meaning
=================  ===========================================================
ID                 the task id (required)
Task / Title       the title (required)
Status / State     the board's status claim; only the word counts (emoji and
                   mis-encoded emoji such as ``ðŸ”µ`` are ignored): AVAILABLE,
                   BLOCKED, CLAIMED, IN PROGRESS, COMPLETE(D)/DONE, FAILED,
                   CANCEL(L)ED. Used for warnings only: status is derived.
Owner              the board's owner claim; ``-`` means none
Dependencies       also Depends on / Deps / Blocked by: ``P0.1.1, P0.1.2``;
                   ``None``/``-``/``—``/empty for none; ``All above`` (every task
                   in the rows above, same table); ``All components`` (every
                   critical-path task of the task tables *before* this table)
Deliverable        backticks are stripped
Est / Estimate     ``1h``, ``30m``, ``1.5h``, ``1h 30m``, ``2`` (hours) -> Decimal hours
Model              the model the task is meant for
Description        one-line description
Capabilities       comma-separated capability names (optional)
Priority           an integer, higher first (optional; default 0)
Kind               ``critical`` or ``filler`` (optional; overrides the heading rule)
Budget             the task's budget in dollars, ``$2.50`` (optional)
Paths              also Files: the path patterns the task will touch, relative
                   to the repository's top, comma-separated (``src/parser/**,
                   docs/*.md``; backticks are stripped) (optional)
Branch             the git branch its work goes on (optional; default
                   ``if/<task-id>``)
=================  ===========================================================

A task's ``section`` is the nearest preceding ``##``/``###`` heading (a ``#``
heading clears it). Tasks are ``filler`` when that heading, or the ``##``
heading above a ``###`` one, contains the word "Filler"; all others are
``critical``. Priority is 0 unless a Priority column says otherwise: the
coordinator breaks ties by board order (see :func:`topological_order`), so
the order of the file stays meaningful without inventing numbers.

A details section -- a heading ``### P0.1.1: Setup etcd/NATS event bus`` whose
id is a task of the board -- adds the ``**Description:**`` paragraph and the
``- [ ]`` items under ``**Acceptance Criteria:**`` to that task.

**YAML** (``fmt="yaml"``) and **JSON** (``fmt="json"``): a mapping with an
optional ``version: 1``, an optional ``branch_prefix`` (the board's branches
are ``<prefix><task-id>`` instead of ``if/<task-id>``; a task's own
``branch`` wins) and a ``tasks`` list. Each task is a mapping of
:class:`TaskSpec` fields (``id``, ``title``, ``description``,
``acceptance_criteria``, ``dependencies``, ``capabilities``, ``kind``,
``priority``, ``estimate_hours``, ``model``, ``deliverable``,
``budget_micros``, ``section``, ``paths``, ``branch``) plus the optional board claims ``status`` and
``owner``. Unknown fields are errors. ``estimate_hours`` may be a number or
an estimate string such as ``"1.5h"``.

GitHub issues (``gh-issues``), task-master (``taskmaster``), Backlog.md
(``backlog``, also a directory) and Spec Kit (``speckit``) are read by
:mod:`infrafabric.coordinator.formats` into the same validation
(:func:`build_board`).

Every problem is collected before anything is raised: a bad board raises one
:class:`~infrafabric.errors.BoardError` whose ``problems`` read
``SOURCE:LINE: task ID: what is wrong``. Things that are suspicious but not
wrong (a status column that contradicts the dependencies, a stated task count
that disagrees with the tasks listed) become :attr:`Board.warnings`.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infrafabric.bus.bounds import MAX_HOURS, parse_decimal, parse_dollars, parse_failure, read_limited
from infrafabric.coordinator.models import (
    TaskKind,
    TaskSpec,
    TaskStatus,
    check_branch,
    default_branch,
    is_task_id,
)
from infrafabric.errors import BoardError, ConfigurationError

__all__ = [
    "ALL_FORMATS",
    "BOARD_FORMATS",
    "Board",
    "Problems",
    "RawTask",
    "build_board",
    "export_json",
    "export_markdown",
    "export_yaml",
    "load_board",
    "parse_board",
    "parse_estimate",
    "parse_status",
    "topological_order",
]

#: the formats this module reads itself
BOARD_FORMATS = ("md", "yaml", "json")
#: every format :func:`parse_board` reads (the others live in :mod:`infrafabric.coordinator.formats`)
ALL_FORMATS = ("md", "yaml", "json", "gh-issues", "taskmaster", "backlog", "speckit")

_FORMAT_ALIASES = {
    "md": "md",
    "markdown": "md",
    "yaml": "yaml",
    "yml": "yaml",
    "json": "json",
}
_SUFFIXES = {".md": "md", ".markdown": "md", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}

_ID_RULE = "ids are 1-128 letters, digits or . _ - : @ + = ~"
_CAPABILITY_RULE = "capabilities are lowercase words, optionally namespaced as domain:skill"
_HINT = "see docs/board-format.md for the board format"


@dataclass(frozen=True)
class Board:
    """A parsed, validated board.

    ``tasks`` are in file order. ``statuses`` and ``owners`` hold the board's
    own claims (its Status and Owner columns, or ``status``/``owner`` fields),
    which the coordinator does not trust: status is derived from dependencies.
    ``lines`` maps each task id to the line that defines it.
    """

    tasks: list[TaskSpec]
    warnings: list[str] = field(default_factory=list)
    statuses: dict[str, TaskStatus] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    source: str = "<board>"
    fmt: str = "md"

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.tasks]

    def get(self, task_id: str) -> TaskSpec:
        """The task with that id (:class:`KeyError` if there is none)."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    def of_kind(self, kind: TaskKind) -> list[TaskSpec]:
        return [t for t in self.tasks if t.kind == kind]


# --------------------------------------------------------------------------- problems


class _Problems:
    """Collects errors and warnings, each prefixed ``SOURCE:LINE: task ID:``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[tuple[int, str]] = []
        self.warnings: list[tuple[int, str]] = []
        self._files: dict[int, str] = {}  # id() of an entry -> the other file it names (a directory board)

    def _format(self, message: str, line: int | None, task: str | None, source: str | None = None) -> str:
        where = source or self.source
        prefix = f"{where}:{line}: " if line else f"{where}: "
        if task is not None:
            prefix += f"task {task}: "
        return prefix + message

    def error(self, message: str, *, line: int | None = None, task: str | None = None,
              source: str | None = None) -> None:
        """Record an error; ``source`` names another file than the board's (a directory's file)."""
        self.errors.append((line or 0, self._format(message, line, task, source)))
        if source:
            self._files[id(self.errors[-1])] = source

    def warn(self, message: str, *, line: int | None = None, task: str | None = None,
             source: str | None = None) -> None:
        self.warnings.append((line or 0, self._format(message, line, task, source)))
        if source:
            self._files[id(self.warnings[-1])] = source

    def _key(self, entry: tuple[int, str]) -> tuple[str, int]:
        """By file (a directory board's), then by line."""
        return self._files.get(id(entry), ""), entry[0]

    def raise_if_any(self) -> None:
        if self.errors:
            ordered = [text for _, text in sorted(self.errors, key=self._key)]
            raise BoardError(ordered, hint=_HINT)

    def warning_texts(self) -> list[str]:
        return [text for _, text in sorted(self.warnings, key=self._key)]


@dataclass
class _Raw:
    """One task as read, before validation."""

    line: int
    label: str  # how messages name the task: its id, or "#3" when it has none
    data: dict[str, Any]
    id: str | None = None
    ok: bool = True  # False when a cell or field was already reported as wrong
    status: TaskStatus | None = None
    status_word: str | None = None
    owner: str | None = None
    field_lines: dict[str, int] = field(default_factory=dict)
    source: str | None = None  # the file that defines it, when not the board's own source


#: the raw-record and problem-collector types other format readers fill in (see :func:`build_board`)
RawTask = _Raw
Problems = _Problems

# --------------------------------------------------------------------------- cell grammar

_EMPTY = frozenset({"", "-", "--", "\u2014", "\u2013", "n/a", "none"})  # em and en dash

_STATUS_WORDS: dict[str, TaskStatus] = {
    "AVAILABLE": TaskStatus.AVAILABLE,
    "BLOCKED": TaskStatus.BLOCKED,
    "CLAIMED": TaskStatus.CLAIMED,
    "IN PROGRESS": TaskStatus.CLAIMED,
    "INPROGRESS": TaskStatus.CLAIMED,
    "COMPLETE": TaskStatus.COMPLETED,
    "COMPLETED": TaskStatus.COMPLETED,
    "DONE": TaskStatus.COMPLETED,
    "FAILED": TaskStatus.FAILED,
    "CANCELLED": TaskStatus.CANCELLED,
    "CANCELED": TaskStatus.CANCELLED,
}

_STATUS_LABEL = {
    TaskStatus.AVAILABLE: "🔵 AVAILABLE",
    TaskStatus.BLOCKED: "🔴 BLOCKED",
    TaskStatus.CLAIMED: "🟡 CLAIMED",
    TaskStatus.COMPLETED: "🟢 COMPLETED",
    TaskStatus.FAILED: "❌ FAILED",
    TaskStatus.CANCELLED: "⚪ CANCELLED",
}


def parse_status(text: str) -> tuple[TaskStatus, str] | None:
    """Read a status cell: ``"ðŸ”µ AVAILABLE"`` -> ``(AVAILABLE, "AVAILABLE")``.

    Only the ASCII words count, so emoji -- real or mis-encoded, whose bytes
    are never ASCII -- are ignored. Returns None for an empty cell; raises
    :class:`ValueError` for a word that is not a status.
    """
    stripped = text.strip().strip("*").strip()
    if stripped.lower() in _EMPTY:
        return None
    words = re.findall(r"[A-Za-z]+", stripped)
    if not words:
        raise ValueError(f"status {text.strip()!r} has no status word")
    word = " ".join(words).upper()
    status = _STATUS_WORDS.get(word)
    if status is None:
        known = "AVAILABLE, BLOCKED, CLAIMED, IN PROGRESS, COMPLETED, DONE, FAILED, CANCELLED"
        raise ValueError(f"unknown status {word!r} (expected one of {known})")
    return status, word


_ESTIMATE = re.compile(
    r"(?:(?P<h>\d+(?:\.\d+)?|\.\d+)\s*(?:h|hr|hrs|hour|hours)\b)?\s*"
    r"(?:(?P<m>\d+(?:\.\d+)?|\.\d+)\s*(?:m|min|mins|minute|minutes)\b)?",
    re.IGNORECASE,
)


def parse_estimate(text: str) -> Decimal | None:
    """``"1h"``, ``"30m"``, ``"1.5h"``, ``"1h 30m"``, ``"2"`` -> Decimal hours.

    Returns None for an empty cell or ``-``; raises :class:`ValueError` for
    anything else (ranges, days, negative numbers).
    """
    stripped = text.strip()
    if stripped.lower() in _EMPTY:
        return None
    if re.fullmatch(r"[0-9.]+", stripped):
        return parse_decimal(stripped, what="estimate", maximum=MAX_HOURS)
    match = _ESTIMATE.fullmatch(stripped) if len(stripped) <= 64 else None
    if match is None or (match.group("h") is None and match.group("m") is None):
        shown = stripped if len(stripped) <= 40 else stripped[:37] + "..."
        raise ValueError(f"cannot read estimate {shown!r} (expected hours or minutes, like 1.5h or 30m)")
    hours = parse_decimal(match.group("h") or "0", what="estimate", maximum=MAX_HOURS)
    if match.group("m") is not None:
        hours += parse_decimal(match.group("m"), what="estimate", maximum=MAX_HOURS * 60) / Decimal(60)
    if hours > MAX_HOURS:
        raise ValueError(f"estimate {stripped!r} is more than {MAX_HOURS} hours")
    return hours.quantize(Decimal("0.000001")).normalize() if hours else Decimal(0)


def _format_estimate(hours: Decimal) -> str:
    minutes = hours * 60
    if hours < 1 and minutes == minutes.to_integral_value():
        return f"{int(minutes)}m"
    return f"{_plain_decimal(hours)}h"


def _plain_decimal(value: Decimal) -> str:
    return format(value, "f")


def _parse_budget(text: str) -> int | None:
    """``"$2.50"`` -> 2_500_000 micro-dollars."""
    stripped = text.strip()
    if stripped.lower() in _EMPTY:
        return None
    cleaned = stripped.removesuffix("USD").strip()
    try:
        return parse_dollars(cleaned, what="budget", negative=False)
    except ConfigurationError as exc:
        if "not a number" in exc.message:
            shown = stripped if len(stripped) <= 40 else stripped[:37] + "..."
            raise ValueError(f"cannot read budget {shown!r} (expected dollars, like $2.50)") from None
        raise ValueError(exc.message) from None


def _format_budget(micros: int) -> str:
    dollars = Decimal(micros) / Decimal(1_000_000)
    text = _plain_decimal(dollars)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"${text}"


def _clean_cell(text: str) -> str | None:
    """An optional text cell: None when empty or ``-``."""
    stripped = text.strip()
    return None if stripped.lower() in _EMPTY else stripped


def _strip_code(text: str) -> str:
    return " ".join(text.replace("`", "").split())


# --------------------------------------------------------------------------- markdown

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$")
_DETAILS_HEADING = re.compile(r"^`?(\S+?)`?\s*:(?:\s+(.*))?$")
_LABEL = re.compile(r"^\s*\*\*\s*([A-Za-z ]+?)\s*:?\s*\*\*:?\s*(.*)$")
_LIST_ITEM = re.compile(r"^\s*[-*+]\s+(?:\[[ xX]\]\s*)?(.*)$")
_STATED = (
    ("total", re.compile(r"total\s+tasks?\W{0,6}(\d+)", re.IGNORECASE)),
    ("critical", re.compile(r"\b(\d+)\s+critical(?:[\s-]+path)?\b", re.IGNORECASE)),
    ("filler", re.compile(r"\b(\d+)\s+filler\b", re.IGNORECASE)),
)

_COLUMNS: dict[str, str] = {}
for _name, _aliases in {
    "id": ("id", "task id", "taskid"),
    "title": ("task", "title", "name", "task name", "summary"),
    "status": ("status", "state"),
    "owner": ("owner", "assignee", "claimed by"),
    "dependencies": (
        "dependencies",
        "dependency",
        "depends on",
        "depends",
        "deps",
        "dep",
        "blocked by",
        "prerequisites",
        "requires",
    ),
    "deliverable": ("deliverable", "deliverables", "output"),
    "estimate": ("est", "estimate", "estimated", "estimated time", "effort", "time", "duration"),
    "model": ("model",),
    "description": ("description", "desc", "details"),
    "capabilities": ("capabilities", "capability", "caps", "skills"),
    "priority": ("priority", "prio"),
    "kind": ("kind", "type"),
    "budget": ("budget", "budget usd", "cost"),
    "paths": ("paths", "path", "files"),
    "branch": ("branch",),
}.items():
    for _alias in _aliases:
        _COLUMNS[_alias] = _name

_COLUMN_TITLES = {
    "id": "ID",
    "title": "Task",
    "status": "Status",
    "owner": "Owner",
    "dependencies": "Dependencies",
    "description": "Description",
    "deliverable": "Deliverable",
    "estimate": "Est",
    "model": "Model",
    "capabilities": "Capabilities",
    "priority": "Priority",
    "kind": "Kind",
    "budget": "Budget",
    "paths": "Paths",
    "branch": "Branch",
}


def _normalise_header(text: str) -> str:
    text = re.sub(r"\(.*?\)", " ", text)
    text = re.sub(r"[*_`.:#]", " ", text)
    return " ".join(text.lower().split())


def _split_row(line: str) -> list[str]:
    """Split a table row on unescaped ``|``; ``\\|`` is a literal pipe."""
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    cells: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] == "|":
            buf.append("|")
            i += 2
            continue
        if c == "|":
            cells.append("".join(buf).strip())
            buf = []
        else:
            buf.append(c)
        i += 1
    cells.append("".join(buf).strip())
    return cells


def _code_mask(lines: list[str]) -> list[bool]:
    """True for every line inside (or delimiting) a fenced code block."""
    mask = [False] * len(lines)
    fence: str | None = None
    for i, line in enumerate(lines):
        if fence is None:
            m = _FENCE.match(line)
            if m:
                fence = m.group(1)
                mask[i] = True
        else:
            mask[i] = True
            s = line.strip()
            if s and set(s) == {fence[0]} and len(s) >= len(fence):
                fence = None
    return mask


@dataclass
class _Table:
    header_line: int
    section: str | None
    filler: bool
    raws: list[_Raw] = field(default_factory=list)


def _parse_markdown(text: str, p: _Problems) -> list[_Raw]:
    lines = text.split("\n")
    code = _code_mask(lines)
    h2: str | None = None
    h3: str | None = None
    seen_ids: set[str] = set()
    tables: list[_Table] = []
    headings: list[tuple[int, str]] = []  # (index, text) of every heading outside code
    i = 0
    while i < len(lines):
        line = lines[i]
        if code[i]:
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            level, title = len(heading.group(1)), (heading.group(2) or "").strip()
            headings.append((i, title))
            details = _DETAILS_HEADING.match(title)
            if details and details.group(1) in seen_ids:
                pass  # a details section of a task above: not a new board section
            elif level == 1:
                h2 = h3 = None
            elif level == 2:
                h2, h3 = title, None
            elif level == 3:
                h3 = title
            i += 1
            continue
        if "|" in line and i + 1 < len(lines) and not code[i + 1]:
            delimiter = lines[i + 1]
            if "|" in delimiter and _DELIMITER.match(delimiter):
                header = _split_row(line)
                end = i + 2
                while end < len(lines) and not code[end] and "|" in lines[end] and lines[end].strip():
                    end += 1
                columns = [_COLUMNS.get(_normalise_header(h)) for h in header]
                if "id" in columns:
                    section = h3 if h3 is not None else h2
                    filler = any(h is not None and "filler" in h.lower() for h in (h2, h3))
                    table = _Table(header_line=i + 1, section=section, filler=filler)
                    _read_task_table(lines, i, end, header, columns, table, tables, p)
                    tables.append(table)
                    seen_ids.update(r.id for r in table.raws if r.id)
                i = end
                continue
        i += 1

    raws = [raw for table in tables for raw in table.raws]
    if not tables:
        p.error("no task table found (a markdown table whose header row has an ID column)")
        return raws
    _read_details(lines, code, headings, raws, p)
    _check_stated_counts(lines, code, raws, p)
    return raws


def _read_task_table(
    lines: list[str],
    start: int,
    end: int,
    header: list[str],
    columns: list[str | None],
    table: _Table,
    earlier: list[_Table],
    p: _Problems,
) -> None:
    header_line = start + 1
    seen: dict[str, str] = {}
    for name, column in zip(header, columns, strict=True):
        if column is None:
            p.warn(f"column {name.strip()!r} is not a board column and was ignored", line=header_line)
        elif column in seen:
            p.error(f"columns {seen[column]!r} and {name.strip()!r} both give the {column}", line=header_line)
            return
        else:
            seen[column] = name.strip()
    if "title" not in seen:
        p.error("task table has no Task/Title column", line=header_line)
        return

    for index in range(start + 2, end):
        number = index + 1
        cells = _split_row(lines[index])
        if not any(cells):
            continue
        id_text = _strip_code(cells[columns.index("id")]).strip("*").strip() if "id" in columns else ""
        if len(cells) != len(header):
            p.error(
                f"row has {len(cells)} cells but the header has {len(header)} (an unescaped '|' in a cell?)",
                line=number,
                task=id_text or None,
            )
            if id_text:
                table.raws.append(_Raw(line=number, label=id_text, data={}, id=id_text, ok=False))
            continue
        if not id_text:
            p.error("row has no task id", line=number)
            continue
        raw = _Raw(line=number, label=id_text, data={"id": id_text}, id=id_text)
        raw.data["section"] = table.section
        raw.data["kind"] = TaskKind.FILLER if table.filler else TaskKind.CRITICAL
        dependency_text: str | None = None

        def bad(message: str, raw: _Raw = raw, number: int = number) -> None:
            p.error(message, line=number, task=raw.label)
            raw.ok = False

        for column, cell in zip(columns, cells, strict=True):
            if column is None or column == "id":
                continue
            try:
                if column == "title":
                    raw.data["title"] = cell.strip()
                elif column == "status":
                    parsed = parse_status(cell)
                    if parsed is not None:
                        raw.status, raw.status_word = parsed
                elif column == "owner":
                    raw.owner = _clean_cell(cell)
                elif column == "dependencies":
                    dependency_text = cell
                elif column == "deliverable":
                    deliverable = _clean_cell(_strip_code(cell))
                    if deliverable is not None:
                        raw.data["deliverable"] = deliverable
                elif column == "estimate":
                    estimate = parse_estimate(cell)
                    if estimate is not None:
                        raw.data["estimate_hours"] = estimate
                elif column == "model":
                    model = _clean_cell(cell)
                    if model is not None:
                        raw.data["model"] = model
                elif column == "description":
                    description = _clean_cell(cell)
                    if description is not None:
                        raw.data["description"] = description
                elif column == "capabilities":
                    text = _clean_cell(cell)
                    if text is not None:
                        raw.data["capabilities"] = [c for c in (_strip_code(x) for x in text.split(",")) if c]
                elif column == "priority":
                    text = _clean_cell(cell)
                    if text is not None:
                        if not re.fullmatch(r"[+-]?[0-9]{1,10}", text):
                            shown = text if len(text) <= 40 else text[:37] + "..."
                            raise ValueError(f"priority {shown!r} is not a whole number")
                        raw.data["priority"] = int(text)
                elif column == "kind":
                    text = _clean_cell(cell)
                    if text is not None:
                        if text.lower() not in ("critical", "filler"):
                            raise ValueError(f"kind {text!r} is neither 'critical' nor 'filler'")
                        raw.data["kind"] = TaskKind(text.lower())
                elif column == "budget":
                    budget = _parse_budget(cell)
                    if budget is not None:
                        raw.data["budget_micros"] = budget
                elif column == "paths":
                    text = _clean_cell(cell)
                    if text is not None:
                        raw.data["paths"] = [x for x in (_strip_code(part) for part in text.split(",")) if x]
                elif column == "branch":
                    branch = _clean_cell(_strip_code(cell))
                    if branch is not None:
                        raw.data["branch"] = branch
            except ValueError as exc:
                bad(str(exc))

        if dependency_text is not None:
            resolved = _resolve_dependencies(dependency_text, raw, table, earlier)
            if isinstance(resolved, str):
                bad(resolved)
            else:
                raw.data["dependencies"] = resolved
        table.raws.append(raw)


def _resolve_dependencies(text: str, raw: _Raw, table: _Table, earlier: list[_Table]) -> list[str] | str:
    """The ids a dependency cell names, or an error message."""
    stripped = " ".join(text.replace("*", "").split())
    lowered = stripped.lower().rstrip(".")
    if lowered in _EMPTY:
        return []
    if lowered in ("all above", "all of the above", "all tasks above"):
        ids = [r.id for r in table.raws if r.id]
        if not ids:
            return "'All above' names no task: it is the first row of its table"
        return list(dict.fromkeys(ids))
    if lowered in ("all components", "all critical tasks", "all critical path tasks"):
        ids = [
            r.id
            for t in earlier
            for r in t.raws
            if r.id and r.data.get("kind", TaskKind.CRITICAL) == TaskKind.CRITICAL
        ]
        if not ids:
            return f"{stripped!r} names no task: no critical-path table comes before this one"
        return list(dict.fromkeys(ids))
    tokens = [t.strip().strip("`").strip() for t in re.split(r",|;|\s+and\s+", stripped)]
    if any(not t or not is_task_id(t) for t in tokens):
        return (
            f"cannot resolve dependencies {text.strip()!r} (expected task ids separated by commas, "
            "'None', 'All above' or 'All components')"
        )
    return tokens


def _read_details(
    lines: list[str], code: list[bool], headings: list[tuple[int, str]], raws: list[_Raw], p: _Problems
) -> None:
    """Attach ``### ID: title`` sections' description and acceptance criteria."""
    by_id: dict[str, _Raw] = {}
    for raw in raws:
        if raw.id is not None and raw.id not in by_id:
            by_id[raw.id] = raw
    found: dict[str, int] = {}
    for n, (index, title) in enumerate(headings):
        m = _DETAILS_HEADING.match(title)
        if not m or m.group(1) not in by_id:
            continue
        task_id, heading_title = m.group(1), (m.group(2) or "").strip()
        raw = by_id[task_id]
        number = index + 1
        if task_id in found:
            p.error(f"details given twice (lines {found[task_id]} and {number})", line=number, task=task_id)
            raw.ok = False
            continue
        found[task_id] = number
        table_title = raw.data.get("title")
        if (
            heading_title
            and isinstance(table_title, str)
            and " ".join(heading_title.split()) != " ".join(table_title.split())
        ):
            p.warn(
                f"details heading says {heading_title!r} but the table calls it {table_title!r}",
                line=number,
                task=task_id,
            )
        end = headings[n + 1][0] if n + 1 < len(headings) else len(lines)
        body = [(lines[j], code[j]) for j in range(index + 1, end)]
        description, criteria = _read_details_body(body)
        if description is not None:
            old = raw.data.get("description")
            if old and old != description:
                p.warn(
                    "the details section's description replaces the one in the table",
                    line=number,
                    task=task_id,
                )
            raw.data["description"] = description
        if criteria is not None:
            raw.data["acceptance_criteria"] = criteria


def _read_details_body(body: list[tuple[str, bool]]) -> tuple[str | None, list[str] | None]:
    description: str | None = None
    criteria: list[str] | None = None
    j = 0
    while j < len(body):
        line, in_code = body[j]
        label = None if in_code else _LABEL.match(line)
        if label is None:
            j += 1
            continue
        name = " ".join(label.group(1).lower().split())
        j += 1
        if name == "description" and description is None:
            parts = [label.group(2).strip()] if label.group(2).strip() else []
            if not parts:  # the paragraph starts on a later line
                while j < len(body) and not body[j][1] and not body[j][0].strip():
                    j += 1
            while j < len(body) and not body[j][1]:
                text = body[j][0].strip()
                if not text or text.startswith(("**", "#")) or _LIST_ITEM.match(body[j][0]):
                    break
                parts.append(text)
                j += 1
            description = "\n".join(parts)
        elif name == "acceptance criteria" and criteria is None:
            criteria = []
            while j < len(body) and not body[j][1] and not body[j][0].strip():
                j += 1
            while j < len(body) and not body[j][1]:
                item = _LIST_ITEM.match(body[j][0])
                if item is None:
                    break
                if item.group(1).strip():
                    criteria.append(item.group(1).strip())
                j += 1
    return description, criteria


def _check_stated_counts(lines: list[str], code: list[bool], raws: list[_Raw], p: _Problems) -> None:
    """Warn when prose like "46 (26 critical path + 20 filler)" disagrees with the tables."""
    listed = {
        "critical": sum(1 for r in raws if r.data.get("kind") == TaskKind.CRITICAL),
        "filler": sum(1 for r in raws if r.data.get("kind") == TaskKind.FILLER),
    }
    listed["total"] = len(raws)
    names = {"total": "tasks", "critical": "critical-path tasks", "filler": "filler tasks"}
    for index, line in enumerate(lines):
        if code[index] or line.lstrip().startswith("|"):
            continue
        for what, pattern in _STATED:
            for m in pattern.finditer(line):
                stated = int(m.group(1))
                if stated != listed[what]:
                    p.warn(
                        f"the board says {stated} {names[what]} but lists {listed[what]}",
                        line=index + 1,
                    )


# --------------------------------------------------------------------------- YAML / JSON

_TASK_FIELDS = frozenset(TaskSpec.model_fields)
_CLAIM_FIELDS = frozenset({"status", "owner"})


@dataclass
class _Marks:
    """Line numbers of a YAML/JSON document's parts, from the YAML node tree."""

    top: dict[str, int] = field(default_factory=dict)
    top_duplicates: list[tuple[str, int]] = field(default_factory=list)
    tasks_line: int | None = None
    tasks: list[tuple[int, dict[str, int], list[tuple[str, int]]]] = field(default_factory=list)


def _mapping_keys(node: yaml.Node) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Key -> line of a mapping node, plus the keys that occur twice."""
    keys: dict[str, int] = {}
    duplicates: list[tuple[str, int]] = []
    if isinstance(node, yaml.MappingNode):
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode) and isinstance(key_node.value, str):
                line = _line_of(key_node) or 0
                if key_node.value in keys:
                    duplicates.append((key_node.value, line))
                else:
                    keys[key_node.value] = line
    return keys, duplicates


def _line_of(node: yaml.Node) -> int | None:
    return node.start_mark.line + 1 if node.start_mark is not None else None


class _BoardLoader(yaml.SafeLoader):
    """YAML as plain data: mappings, lists, strings, numbers, booleans, null.
    Binary, sets, timestamps and other tagged types are errors, not values a
    task could carry onto the bus."""


for _tag in ("tag:yaml.org,2002:binary", "tag:yaml.org,2002:set", "tag:yaml.org,2002:timestamp",
             "tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs"):
    def _refuse(loader: yaml.SafeLoader, node: yaml.Node, tag: str = _tag) -> Any:
        raise yaml.constructor.ConstructorError(
            None, None, f"{tag.rsplit(':', 1)[-1]} values (!!{tag.rsplit(':', 1)[-1]}) are not allowed in a "
            "board: quote the text", node.start_mark)

    _BoardLoader.add_constructor(_tag, _refuse)


def _yaml_marks(text: str) -> _Marks | None:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    marks = _Marks()
    if not isinstance(root, yaml.MappingNode):
        return marks
    marks.top, marks.top_duplicates = _mapping_keys(root)
    for key_node, value_node in root.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "tasks":
            marks.tasks_line = _line_of(key_node)
            if isinstance(value_node, yaml.SequenceNode):
                for item in value_node.value:
                    keys, duplicates = _mapping_keys(item)
                    marks.tasks.append((_line_of(item) or 0, keys, duplicates))
    return marks


def _parse_structured(text: str, fmt: str, p: _Problems) -> list[_Raw]:
    data: Any
    json_duplicates: list[str] = []
    if fmt == "yaml":
        try:
            data = yaml.load(text, Loader=_BoardLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            p.error(f"not valid YAML: {problem}", line=mark.line + 1 if mark is not None else None)
            return []
        except (RecursionError, ValueError) as exc:
            p.error(f"not a usable YAML board: {parse_failure(exc)}")
            return []
    else:

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            result: dict[str, Any] = {}
            for key, value in items:
                if key in result:
                    json_duplicates.append(key)
                result[key] = value
            return result

        try:
            data = json.loads(text, object_pairs_hook=pairs)
        except json.JSONDecodeError as exc:
            p.error(f"not valid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno)
            return []
        except (RecursionError, ValueError) as exc:
            p.error(f"not a usable JSON board: {parse_failure(exc)}")
            return []
    marks = _yaml_marks(text)

    if not isinstance(data, dict):
        p.error("the board must be a mapping with a 'tasks' list", line=1)
        return []
    for key, again in marks.top_duplicates if marks else []:
        first = marks.top.get(key) if marks else None
        p.error(f"top-level field {key!r} is given twice (first at line {first})", line=again)
    for key in data:
        if key not in ("version", "tasks", "branch_prefix"):
            line = marks.top.get(str(key)) if marks else None
            p.error(f"unknown top-level field {key!r} (expected 'version', 'tasks' and 'branch_prefix')",
                    line=line)
    prefix = data.get("branch_prefix")
    if prefix is not None:
        try:
            if not isinstance(prefix, str) or not prefix:
                raise ValueError("must be a non-empty string, e.g. 'feat/'")
            check_branch(prefix + "x")
        except ValueError as exc:
            line = marks.top.get("branch_prefix") if marks else None
            p.error(f"branch_prefix {str(prefix)[:60]!r} {exc}", line=line)
            prefix = None
    if "version" in data and (data["version"] != 1 or isinstance(data["version"], bool)):
        line = marks.top.get("version") if marks else None
        p.error(f"unsupported board version {data['version']!r} (this reader knows version 1)", line=line)
    tasks = data.get("tasks")
    if not isinstance(tasks, list):
        line = marks.tasks_line if marks else None
        p.error("the board has no 'tasks' list", line=line)
        return []
    if marks is not None and len(marks.tasks) != len(tasks):
        marks = None  # the node tree and the data disagree (e.g. JSON YAML cannot read): no lines
    if marks is None and json_duplicates:
        for key in dict.fromkeys(json_duplicates):
            p.error(f"key {key!r} is given twice in one object")

    raws: list[_Raw] = []
    for index, item in enumerate(tasks):
        line, keys, duplicates = marks.tasks[index] if marks else (0, {}, [])
        task_id = item.get("id") if isinstance(item, dict) else None
        label = task_id if isinstance(task_id, str) and task_id else f"#{index + 1}"
        if not line and isinstance(task_id, str):
            line = _guess_line(text, task_id)
        raw = _Raw(line=line, label=label, data={}, field_lines=keys)
        if isinstance(task_id, str):
            raw.id = task_id
        raws.append(raw)
        if not isinstance(item, dict):
            p.error(f"task #{index + 1} is not a mapping of fields", line=line or None)
            raw.ok = False
            continue
        for key, twice_line in duplicates:
            p.error(f"field {key!r} is given twice", line=twice_line, task=label)
            raw.ok = False
        for key, value in item.items():
            key_line = keys.get(str(key)) or line or None
            if key not in _TASK_FIELDS and key not in _CLAIM_FIELDS:
                p.error(f"unknown field {key!r}", line=key_line, task=label)
                raw.ok = False
            elif key == "status":
                try:
                    if not isinstance(value, str):
                        raise ValueError(f"status must be a word like 'available', got {value!r}")
                    parsed = parse_status(value)
                except ValueError as exc:
                    p.error(str(exc), line=key_line, task=label)
                    raw.ok = False
                    continue
                if parsed is not None:
                    raw.status, raw.status_word = parsed
            elif key == "owner":
                if value is not None and not isinstance(value, str):
                    p.error(f"owner must be a string, got {value!r}", line=key_line, task=label)
                    raw.ok = False
                raw.owner = value if isinstance(value, str) and value.strip() not in ("", "-") else None
            elif key == "estimate_hours" and isinstance(value, str):
                try:
                    raw.data[key] = parse_estimate(value)
                except ValueError as exc:
                    p.error(str(exc), line=key_line, task=label)
                    raw.ok = False
            else:
                raw.data[key] = value
        if isinstance(prefix, str) and "branch" not in raw.data and isinstance(task_id, str):
            raw.data["branch"] = default_branch(task_id, prefix)  # the board's prefix, the task's id
    return raws


def _guess_line(text: str, task_id: str) -> int:
    m = re.search(r'"id"\s*:\s*' + re.escape(json.dumps(task_id)), text)
    return text.count("\n", 0, m.start()) + 1 if m else 0


# --------------------------------------------------------------------------- validation


def _explain(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    """Pydantic's errors as sentences naming the field."""
    out: list[str] = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        kind = err["type"]
        value = err.get("input")
        name = str(loc[0]) if loc else "task"
        where = name + "".join(f"[{part}]" for part in loc[1:])
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        if kind == "string_pattern_mismatch" and name == "id":
            out.append(f"invalid task id {shown}: {_ID_RULE}")
        elif kind == "string_pattern_mismatch" and name == "dependencies":
            out.append(f"dependency {shown} is not a valid task id: {_ID_RULE}")
        elif kind == "string_pattern_mismatch" and name == "capabilities":
            out.append(f"invalid capability {shown}: {_CAPABILITY_RULE}")
        elif kind == "missing":
            out.append(f"missing required field {name!r}")
        elif name == "title" and (kind == "string_too_short"
                                  or (kind == "value_error" and "blank" in err["msg"])):
            out.append("the title is empty")
        elif kind == "string_too_long":
            limit = (err.get("ctx") or {}).get("max_length")
            out.append(f"{where} is longer than {limit} characters")
        elif kind == "value_error" and name == "dependencies":
            deps = data.get("dependencies")
            twice = sorted({d for d in deps if deps.count(d) > 1}) if isinstance(deps, list) else []
            listed = ", ".join(str(d) for d in twice) or "a dependency"
            out.append(f"dependency {listed} is listed twice")
        elif kind == "extra_forbidden":
            out.append(f"unknown field {name!r}")
        elif kind == "value_error":  # our bounds (control characters, line breaks): say them plainly
            message = str(err["msg"]).removeprefix("Value error, ")
            out.append(f"{where} {message} (got {shown})")
        else:
            message = err["msg"]
            message = message[:1].lower() + message[1:]
            out.append(f"{where}: {message} (got {shown})")
    return out


def _validate(raws: list[_Raw], p: _Problems) -> list[tuple[_Raw, TaskSpec]]:
    valid: list[tuple[_Raw, TaskSpec]] = []
    first_line: dict[str, int] = {}
    first_where: dict[str, str] = {}
    known: set[str] = set()
    for raw in raws:
        if raw.id is not None:
            known.add(raw.id)
            if raw.id in first_line:
                p.error(
                    f"duplicate task id (first defined at {first_where[raw.id]})",
                    line=raw.line,
                    task=raw.label,
                    source=raw.source,
                )
                continue
            first_line[raw.id] = raw.line
            first_where[raw.id] = (f"{raw.source}:{raw.line}" if raw.source else f"line {raw.line}")
        if not raw.ok and not raw.data:
            continue  # nothing left to check: the row or item was unreadable
        try:
            spec = TaskSpec.model_validate(raw.data)
        except ValidationError as exc:
            for message in _explain(exc, raw.data):
                p.error(message, line=raw.line or None, task=raw.label, source=raw.source)
            continue
        if raw.ok:  # tasks with a problem already reported stay out of the graph checks
            valid.append((raw, spec))

    graph: dict[str, list[str]] = {}
    for raw, spec in valid:
        edges: list[str] = []
        for dep in spec.dependencies:
            if dep == spec.id:
                p.error("depends on itself", line=raw.line or None, task=spec.id, source=raw.source)
            elif dep not in known:
                p.error(f"depends on unknown task {dep!r}", line=raw.line or None, task=spec.id,
                        source=raw.source)
            else:
                edges.append(dep)
        graph[spec.id] = edges
    lines = {spec.id: raw.line for raw, spec in valid}
    sources = {spec.id: raw.source for raw, spec in valid}
    for cycle in _find_cycles(list(graph), graph):
        p.error(
            "dependency cycle " + " -> ".join([*cycle, cycle[0]]) + " (each depends on the next)",
            line=lines.get(cycle[0]) or None,
            task=cycle[0],
            source=sources.get(cycle[0]),
        )
    return valid


def _find_cycles(order: list[str], graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one task.

    ``graph`` maps a task to the tasks it depends on (self-loops are ignored);
    ``order`` fixes the traversal order so the result is deterministic. Each
    cycle starts at its earliest task in ``order``.
    """
    position = {node: i for i, node in enumerate(order)}
    successors = {
        node: [d for d in dict.fromkeys(graph.get(node, ())) if d in position and d != node] for node in order
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in order:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, edge = work.pop()
            if edge == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if edge < len(successors[node]):
                work.append((node, edge + 1))
                nxt = successors[node][edge]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])

    cycles: list[list[str]] = []
    for component in sorted(components, key=lambda c: min(position[n] for n in c)):
        members = set(component)
        start = min(component, key=lambda n: position[n])
        # breadth-first from start back to start, inside the component: a shortest cycle
        previous: dict[str, str] = {}
        queue = [start]
        found: str | None = None
        while queue and found is None:
            nxt_queue: list[str] = []
            for node in queue:
                for dep in graph.get(node, ()):
                    if dep == start:
                        found = node
                        break
                    if dep in members and dep not in previous and dep != node:
                        previous[dep] = node
                        nxt_queue.append(dep)
                if found is not None:
                    break
            queue = nxt_queue
        assert found is not None  # a strongly connected component always closes a cycle
        path = [found]
        while path[-1] != start:
            path.append(previous[path[-1]])
        cycles.append(path[::-1])
    return cycles


def _status_warnings(valid: list[tuple[_Raw, TaskSpec]], p: _Problems) -> None:
    """Warn where the board's status claims contradict its dependencies."""
    claims = {spec.id: raw.status for raw, spec in valid}
    for raw, spec in valid:
        if raw.status is None:
            continue
        word = raw.status_word or raw.status.value.upper()
        open_deps = [d for d in spec.dependencies if claims.get(d) != TaskStatus.COMPLETED]
        if raw.status in (TaskStatus.AVAILABLE, TaskStatus.CLAIMED, TaskStatus.COMPLETED) and open_deps:
            which = "which is" if len(open_deps) == 1 else "which are"
            p.warn(
                f"{spec.id} is marked {word} but depends on {', '.join(open_deps)}, {which} not completed",
                line=raw.line or None,
                task=spec.id,
                source=raw.source,
            )
        elif raw.status == TaskStatus.BLOCKED and not open_deps:
            reason = "all its dependencies are completed" if spec.dependencies else "it has no dependencies"
            p.warn(f"{spec.id} is marked {word} but {reason}", line=raw.line or None, task=spec.id,
                   source=raw.source)


# --------------------------------------------------------------------------- entry points


def _guess_format(text: str, source: str) -> str:
    suffix = Path(source).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    head = text.lstrip("\ufeff \t\r\n")
    if head.startswith(("{", "[")):
        return "json"
    if re.search(r"^(?:tasks|version)\s*:", text, re.MULTILINE) and not re.search(
        r"^\s*\|.*\|\s*$", text, re.MULTILINE
    ):
        return "yaml"
    return "md"


def parse_board(text: str, source: str = "<board>", fmt: str | None = None) -> Board:
    """Parse a board (markdown, YAML or JSON, or one of :data:`ALL_FORMATS`
    read by :mod:`infrafabric.coordinator.formats`: gh-issues, taskmaster,
    backlog, speckit) into validated task specs.

    ``source`` names the board in messages and, when ``fmt`` is None, the
    content and its suffix (``.md``, ``.yaml``/``.yml``, ``.json``) pick the
    format. Raises :class:`BoardError` listing every problem found.
    """
    from infrafabric.coordinator import formats  # the other formats (they build on this module)

    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if fmt is None:
        chosen = formats.detect(text, source) or _guess_format(text, source)
    else:
        found = _FORMAT_ALIASES.get(fmt.lower()) or formats.canonical(fmt)
        if found is None:
            raise BoardError([f"{source}: unknown board format {fmt!r} (expected {', '.join(ALL_FORMATS)})"])
        chosen = found
    if chosen not in BOARD_FORMATS:
        return formats.read_text(text, source, chosen)
    p = _Problems(source)
    raws = _parse_markdown(text, p) if chosen == "md" else _parse_structured(text, chosen, p)
    return build_board(raws, p, fmt=chosen)


def build_board(raws: list[_Raw], p: _Problems, *, fmt: str) -> Board:
    """Validate raw task records (and the problems found reading them) into a :class:`Board`.

    The one validation path of every format: limits, ids, duplicates, unknown
    dependencies and cycles are checked here; raises :class:`BoardError` when
    ``p`` holds any error.
    """
    valid = _validate(raws, p)
    p.raise_if_any()
    _status_warnings(valid, p)
    return Board(
        tasks=[spec for _, spec in valid],
        warnings=p.warning_texts(),
        statuses={spec.id: raw.status for raw, spec in valid if raw.status is not None},
        owners={spec.id: raw.owner for raw, spec in valid if raw.owner is not None},
        lines={spec.id: raw.line for raw, spec in valid},
        source=p.source,
        fmt=fmt,
    )


#: the largest board file read (a 100,000-task board in YAML is about 20 MB)
MAX_BOARD_BYTES = 64 * 1024 * 1024


def load_board(path: str | Path, fmt: str | None = None) -> Board:
    """Read and parse a board file (UTF-8), or a Backlog.md directory. Unreadable files are a
    :class:`BoardError`."""
    where = str(path)
    if Path(path).is_dir():
        from infrafabric.coordinator import formats

        return formats.load_dir(Path(path), fmt)
    try:
        data = read_limited(path, what="board", limit=MAX_BOARD_BYTES)
    except ConfigurationError as exc:
        raise BoardError([f"{where}: {exc.message.removeprefix(f'board {where} ')}"]) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BoardError([f"{where}: cannot read the board: {reason}"]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BoardError([f"{where}:{line}: the board is not UTF-8 text (byte {exc.start})"]) from exc
    return parse_board(text, source=where, fmt=fmt)


# --------------------------------------------------------------------------- graph helper


def topological_order(tasks: Sequence[TaskSpec]) -> list[str]:
    """Task ids with every task after its dependencies; ties keep the given order.

    Deterministic: among the tasks whose dependencies are all placed, the one
    that comes first in ``tasks`` goes next, so a board already in dependency
    order comes back unchanged. Dependencies on ids that are not in ``tasks``
    are treated as satisfied (so the helper works on the remaining part of a
    board). Raises :class:`BoardError` on duplicate ids and cycles.
    """
    position: dict[str, int] = {}
    problems: list[str] = []
    for i, task in enumerate(tasks):
        if task.id in position:
            problems.append(f"task {task.id}: duplicate task id")
        else:
            position[task.id] = i
    if problems:
        raise BoardError(problems)
    waiting = [0] * len(tasks)
    dependents: list[list[int]] = [[] for _ in tasks]
    graph: dict[str, list[str]] = {}
    for i, task in enumerate(tasks):
        if task.id in task.dependencies:
            problems.append(f"task {task.id}: depends on itself")
        deps = [d for d in dict.fromkeys(task.dependencies) if d in position and d != task.id]
        graph[task.id] = deps
        waiting[i] = len(deps)
        for dep in deps:
            dependents[position[dep]].append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(tasks[i].id)
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < len(tasks) or problems:
        for cycle in _find_cycles([t.id for t in tasks], graph):
            problems.append(
                f"task {cycle[0]}: dependency cycle "
                + " -> ".join([*cycle, cycle[0]])
                + " (each depends on the next)"
            )
        raise BoardError(problems)
    return order


# --------------------------------------------------------------------------- export


def _task_dict(task: TaskSpec) -> dict[str, Any]:
    """A task's fields for YAML/JSON: id and title always, the rest when not default."""
    out: dict[str, Any] = {"id": task.id, "title": task.title}
    defaults = TaskSpec(id=task.id, title=task.title)
    for name in TaskSpec.model_fields:
        if name in out:
            continue
        value = getattr(task, name)
        if value == getattr(defaults, name):
            continue
        if isinstance(value, TaskKind):
            value = value.value
        elif isinstance(value, Decimal):
            # a plain number when a float holds it exactly, else a string (read back exactly)
            as_float = float(value)
            value = as_float if Decimal(repr(as_float)) == value else _plain_decimal(value)
        elif isinstance(value, list):
            value = list(value)
        out[name] = value
    return out


def export_json(tasks: Sequence[TaskSpec]) -> str:
    """The tasks as a JSON board (``version: 1``) that :func:`parse_board` reads back."""
    board = {"version": 1, "tasks": [_task_dict(t) for t in tasks]}
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def export_yaml(tasks: Sequence[TaskSpec]) -> str:
    """The tasks as a YAML board (``version: 1``) that :func:`parse_board` reads back."""
    board = {"version": 1, "tasks": [_task_dict(t) for t in tasks]}
    return yaml.safe_dump(board, sort_keys=False, allow_unicode=True, width=1000)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _is_filler_section(section: str | None) -> bool:
    return section is not None and "filler" in section.lower()


def export_markdown(
    tasks: Sequence[TaskSpec],
    statuses: Mapping[str, TaskStatus | str] | None = None,
    *,
    owners: Mapping[str, str] | None = None,
    title: str = "Task Board",
) -> str:
    """The tasks as a markdown board like the Phase 0 board.

    One table per run of tasks sharing a section, under a ``##`` heading named
    after it; a Status column (live status, when ``statuses`` is given) and an
    Owner column (when ``owners`` is given); details sections for descriptions
    that need them and for acceptance criteria. Dependencies are written out
    as ids, never ``All above``. :func:`parse_board` reads the result back to
    the same task specs, as long as texts are single-line (markdown cells and
    paragraphs cannot hold line breaks or surrounding blanks).
    """
    out: list[str] = [f"# {title}", ""]
    for number, run in enumerate(section_runs(tasks)):
        section = run[0].section
        if section is not None:
            out += [f"## {section}", ""]
        elif number > 0:
            out += [f"# {title}", ""]  # a '#' heading ends the previous section
        out += _export_table(run, section, statuses, owners)
    return "\n".join(out).rstrip("\n") + "\n"


def section_runs(tasks: Sequence[TaskSpec]) -> list[list[TaskSpec]]:
    """``tasks`` cut into runs of neighbours that share a section (what a
    board export writes under one heading)."""
    runs: list[list[TaskSpec]] = []
    for task in tasks:
        if runs and runs[-1][0].section == task.section:
            runs[-1].append(task)
        else:
            runs.append([task])
    return runs


def _export_table(
    run: list[TaskSpec],
    section: str | None,
    statuses: Mapping[str, TaskStatus | str] | None,
    owners: Mapping[str, str] | None,
) -> list[str]:
    filler = _is_filler_section(section)
    description_column = all(not t.acceptance_criteria and "\n" not in t.description for t in run)
    columns = ["id", "title"]
    if statuses is not None:
        columns.append("status")
    if owners is not None:
        columns.append("owner")
    if not filler or any(t.dependencies for t in run):
        columns.append("dependencies")
    if description_column and any(t.description for t in run):
        columns.append("description")
    for name, used in (
        ("deliverable", any(t.deliverable is not None for t in run)),
        ("estimate", any(t.estimate_hours is not None for t in run)),
        ("model", any(t.model is not None for t in run)),
        ("capabilities", any(t.capabilities for t in run)),
        ("priority", any(t.priority != 0 for t in run)),
        ("kind", any((t.kind == TaskKind.FILLER) != filler for t in run)),
        ("budget", any(t.budget_micros is not None for t in run)),
        ("paths", any(t.paths for t in run)),
        ("branch", any(t.branch is not None for t in run)),
    ):
        if used:
            columns.append(name)

    lines = [
        "| " + " | ".join(_COLUMN_TITLES[c] for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for task in run:
        cells: list[str] = []
        for column in columns:
            cells.append(_cell(_export_cell(task, column, statuses, owners)))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    for task in run:
        in_column = description_column and "description" in columns
        description = "" if in_column else task.description
        if not description and not task.acceptance_criteria:
            continue
        lines += [f"### {task.id}: {' '.join(task.title.split())}", ""]
        if description:
            lines += [f"**Description:** {description}", ""]
        if task.acceptance_criteria:
            lines.append("**Acceptance Criteria:**")
            lines += [f"- [ ] {' '.join(c.split())}" for c in task.acceptance_criteria]
            lines.append("")
    return lines


def _export_cell(
    task: TaskSpec,
    column: str,
    statuses: Mapping[str, TaskStatus | str] | None,
    owners: Mapping[str, str] | None,
) -> str:
    getters: dict[str, Callable[[], str]] = {
        "id": lambda: task.id,
        "title": lambda: task.title,
        "status": lambda: _status_cell(statuses, task.id),
        "owner": lambda: (owners or {}).get(task.id) or "-",
        "dependencies": lambda: ", ".join(task.dependencies) or "None",
        "description": lambda: task.description or "-",
        "deliverable": lambda: task.deliverable or "-",
        "estimate": lambda: _format_estimate(task.estimate_hours) if task.estimate_hours is not None else "-",
        "model": lambda: task.model or "-",
        "capabilities": lambda: ", ".join(task.capabilities) or "-",
        "priority": lambda: str(task.priority),
        "kind": lambda: task.kind.value,
        "budget": lambda: _format_budget(task.budget_micros) if task.budget_micros is not None else "-",
        "paths": lambda: ", ".join(f"`{p}`" for p in task.paths) or "-",
        "branch": lambda: f"`{task.branch}`" if task.branch else "-",
    }
    return getters[column]()


def _status_cell(statuses: Mapping[str, TaskStatus | str] | None, task_id: str) -> str:
    if not statuses or task_id not in statuses:
        return ""
    value = statuses[task_id]
    try:
        return _STATUS_LABEL[TaskStatus(value)]
    except ValueError:
        return str(value).upper()
