"""GitHub issues (``gh-issues``): the JSON of ``gh issue list`` in, a script of
``gh`` commands out.

Read: ``gh issue list --state all --limit 1000 --json
number,title,body,labels,state,assignees`` (a list of issues; the REST shape
of ``gh api repos/OWNER/REPO/issues`` is read too). Each issue is task
``GH-<number>``; dependencies come from body lines such as ``Blocked by #3``
or ``depends on #4, #5`` and from native links where present (``blockedBy`` /
``blocked_by`` / ``blocking``, ``subIssues`` / ``sub_issues`` /
``trackedIssues``, ``parent`` / ``trackedInIssues``). Labels ``cap:NAME``,
``capability:NAME`` and ``skill:NAME`` are capabilities; other labels are
ignored. Closed issues import completed. See ``docs/board-format.md``.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from infrafabric.coordinator.board import Board, Problems, RawTask, build_board, topological_order
from infrafabric.coordinator.formats._common import (
    EXTENSION,
    EXTENSION_FIELDS,
    Node,
    capability_label,
    label_capabilities,
    load_json,
    node_lines,
    shorten,
)
from infrafabric.coordinator.models import TaskSpec, TaskStatus

ID_PREFIX = "GH-"
_GH_ID = re.compile(r"^GH-([1-9][0-9]{0,9})$")
_KEYWORD = r"(?:blocked\s+by|depends\s+on|depends\s+upon|dependent\s+on)"
_REFS = re.compile(
    _KEYWORD + r"\s*:?\s*((?:#[0-9]+(?:\s*(?:,|;|&|\band\b|\bor\b)?\s*(?=#))?)+)", re.IGNORECASE
)
_REF = re.compile(r"#([0-9]+)")
_CRITERIA_HEADING = re.compile(
    r"^\s*(?:#{1,6}\s*|\*\*\s*)acceptance\s+criteria\s*:?\s*(?:\*\*)?\s*:?\s*$", re.IGNORECASE
)
_ITEM = re.compile(r"^\s*[-*+]\s+(?:\[[ xX]\]\s*)?(.*)$")

#: native link fields: the issue depends on the issues listed (``blockedBy``), or they on it
_DEPENDS_ON_THEM = ("blockedBy", "blocked_by", "subIssues", "sub_issues", "trackedIssues", "tracked_issues")
_THEY_DEPEND_ON_IT = ("blocking", "trackedInIssues", "tracked_in_issues", "parent")


def read(text: str, source: str) -> Board:
    p = Problems(source)
    data = load_json(text, p, "gh issue list")
    if data is None:
        p.raise_if_any()
        return build_board([], p, fmt="gh-issues")
    nodes = node_lines(text)
    items = data
    if isinstance(data, dict) and isinstance(data.get("issues"), list):
        items, nodes = data["issues"], nodes.key("issues")
    if not isinstance(items, list):
        p.error(
            "expected a JSON list of issues, as written by `gh issue list --json "
            "number,title,body,labels,state,assignees`",
            line=1,
        )
        return build_board([], p, fmt="gh-issues")

    raws: dict[int, RawTask] = {}
    extra: dict[int, list[int]] = {}  # number -> the numbers of its native-link dependencies
    for index, item in enumerate(items):
        node = nodes.item(index)
        if not isinstance(item, dict):
            p.error(f"issue #{index + 1} of the list is not an object", line=node.line or None)
            continue
        if "pull_request" in item:
            p.warn(f"item {index + 1} is a pull request, not an issue: skipped", line=node.line or None)
            continue
        number = item.get("number")
        label = f"issue {index + 1} of the list"
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            what = "missing required field 'number'" if "number" not in item else (
                f"field 'number' must be a positive whole number, got {shorten(number)}")
            p.error(f"{label}: {what}", line=node.at("number") or None)
            continue
        task_id = f"{ID_PREFIX}{number}"
        raw = RawTask(line=node.line, label=task_id, data={"id": task_id}, id=task_id,
                      field_lines=dict(node.key_lines))
        if number in raws:
            # let the common validation name both definitions
            raws[-index - 1] = raw
        else:
            raws[number] = raw
        _read_issue(item, node, raw, number, p, extra)

    for number, links in extra.items():
        target = raws.get(number)
        if target is None:
            continue
        listed: list[str] = target.data.setdefault("dependencies", [])
        for dep_number in links:
            if dep_number != number and f"{ID_PREFIX}{dep_number}" not in listed:
                listed.append(f"{ID_PREFIX}{dep_number}")
    known = {n for n in raws if n > 0}
    for raw in raws.values():
        deps = raw.data.get("dependencies")
        if not deps:
            continue
        kept: list[str] = []
        for dep in deps:
            dep_number = int(dep.removeprefix(ID_PREFIX))
            if dep_number not in known:
                p.error(
                    f"depends on #{dep_number}, which is not in the file (closed, or past gh's --limit? "
                    "list with --state all --limit 1000)",
                    line=raw.line or None,
                    task=raw.label,
                )
                raw.ok = False
            else:
                kept.append(dep)
        raw.data["dependencies"] = sorted(set(kept), key=lambda d: int(d.removeprefix(ID_PREFIX)))
    ordered = [raws[n] for n in sorted(n for n in raws if n > 0)] + [raws[n] for n in raws if n < 0]
    return build_board(ordered, p, fmt="gh-issues")


def _numbers(value: Any) -> list[int] | None:
    """Issue numbers from a native link field: ints, objects with ``number``, or ``{"nodes": [...]}``."""
    if isinstance(value, dict):
        if isinstance(value.get("nodes"), list):
            value = value["nodes"]
        elif isinstance(value.get("number"), int):
            value = [value]
        else:
            return None
    if not isinstance(value, list):
        return None
    found: list[int] = []
    for entry in value:
        if isinstance(entry, dict):
            entry = entry.get("number")
        if not isinstance(entry, int) or isinstance(entry, bool):
            return None
        found.append(entry)
    return found


def _read_issue(item: dict[str, Any], node: Node, raw: RawTask, number: int, p: Problems,
                extra: dict[int, list[int]]) -> None:
    def bad(message: str, key: str) -> None:
        p.error(message, line=node.at(key) or None, task=raw.label)
        raw.ok = False

    title = item.get("title")
    if "title" in item and not isinstance(title, str):  # a missing one is reported by the validation
        bad(f"field 'title' must be a string, got {shorten(title)}", "title")
        raw.data["title"] = "?"
    elif isinstance(title, str):
        raw.data["title"] = title.strip()

    body = item.get("body")
    if body is not None and not isinstance(body, str):
        bad(f"field 'body' must be a string, got {shorten(body)}", "body")
    elif body:
        body, extension = _take_extension(body)
        if isinstance(extension, str):
            bad(f"field 'body': {extension}", "body")
        elif extension:
            raw.data.update(extension)
        description, criteria, deps = parse_body(body)
        if description:
            raw.data["description"] = description
        if criteria:
            raw.data["acceptance_criteria"] = criteria
        if deps:
            raw.data["dependencies"] = [f"{ID_PREFIX}{d}" for d in deps]

    labels = item.get("labels") or []
    if not isinstance(labels, list):
        bad(f"field 'labels' must be a list, got {shorten(labels)}", "labels")
        labels = []
    names: list[str] = []
    for entry in labels:
        name = entry.get("name") if isinstance(entry, dict) else entry
        if not isinstance(name, str):
            bad(f"a label must be a name or an object with 'name', got {shorten(entry)}", "labels")
            continue
        names.append(name)
    capabilities = label_capabilities(names, lambda problem: bad(problem, "labels"))
    if capabilities:
        raw.data["capabilities"] = capabilities

    state = item.get("state")
    closed = False
    if state is not None:
        if not isinstance(state, str) or state.upper() not in ("OPEN", "CLOSED"):
            bad(f"field 'state' must be OPEN or CLOSED, got {shorten(state)}", "state")
        else:
            closed = state.upper() == "CLOSED"

    assignees = item.get("assignees")
    if assignees is None and isinstance(item.get("assignee"), dict):
        assignees = [item["assignee"]]
    owner = None
    if isinstance(assignees, list) and assignees:
        first = assignees[0]
        login = first.get("login") if isinstance(first, dict) else first
        if isinstance(login, str) and login.strip():
            owner = login.strip()
    elif assignees is not None and not isinstance(assignees, list):
        bad(f"field 'assignees' must be a list, got {shorten(assignees)}", "assignees")
    raw.owner = owner
    if closed:
        raw.status, raw.status_word = TaskStatus.COMPLETED, "CLOSED"
    elif owner is not None:
        raw.status, raw.status_word = TaskStatus.CLAIMED, "OPEN (assigned)"

    for key in (*_DEPENDS_ON_THEM, *_THEY_DEPEND_ON_IT):
        if key not in item or item[key] is None:
            continue
        numbers = _numbers(item[key])
        if numbers is None:
            bad(f"field {key!r} must list issues (numbers or objects with 'number'), got "
                f"{shorten(item[key])}", key)
            continue
        for other in numbers:
            if key in _DEPENDS_ON_THEM:
                extra.setdefault(number, []).append(other)
            else:
                extra.setdefault(other, []).append(number)


_EXTENSION_LINE = re.compile(
    r"^[ \t]*<!--[ \t]*" + EXTENSION + r":[ \t]*(\{.*\})[ \t]*-->[ \t]*$", re.MULTILINE
)
#: the task fields an issue carries in its body's ``<!-- infrafabric: {...} -->`` comment
_BODY_FIELDS = EXTENSION_FIELDS - {"capabilities"}


def _take_extension(body: str) -> tuple[str, dict[str, Any] | str]:
    """The body without its ``<!-- infrafabric: {...} -->`` line, and that line's fields (or a problem)."""
    m = _EXTENSION_LINE.search(body)
    if m is None:
        return body, {}
    rest = body[: m.start()] + body[m.end():]
    try:
        fields = json.loads(m.group(1))
    except (ValueError, RecursionError) as exc:
        return rest, f"the {EXTENSION} comment is not valid JSON ({exc})"
    if not isinstance(fields, dict) or set(fields) - _BODY_FIELDS:
        return rest, f"the {EXTENSION} comment may hold only {', '.join(sorted(_BODY_FIELDS))}"
    return rest, fields


def parse_body(body: str) -> tuple[str, list[str], list[int]]:
    """An issue body -> (description, acceptance criteria, dependency numbers).

    Lines that only state dependencies (``Depends on #3``) and an ``Acceptance
    criteria`` section are taken out of the description.
    """
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    deps: list[int] = []
    kept: list[str] = []
    criteria: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _CRITERIA_HEADING.match(line):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            items: list[str] = []
            while j < len(lines):
                m = _ITEM.match(lines[j])
                if m is None:
                    break
                if m.group(1).strip():
                    items.append(m.group(1).strip())
                j += 1
            if items:
                criteria += items
                i = j
                continue
        found = list(_REFS.finditer(line))
        for m in found:
            for ref in _REF.findall(m.group(1)):
                if int(ref) not in deps:
                    deps.append(int(ref))
        if found:
            rest = _REFS.sub("", line)
            if not re.sub(r"[\s\-*+_.,;:>]|\[[ xX]\]", "", rest):
                i += 1
                continue  # a dependency line: not part of the description
        kept.append(line)
        i += 1
    description = "\n".join(kept).strip()
    description = re.sub(r"\n{3,}", "\n\n", description)
    return description, criteria, deps


# --------------------------------------------------------------------------- export


def _var(task_id: str, used: set[str]) -> str:
    name = "N_" + re.sub(r"\W", "_", task_id)
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}_{n}", n + 1
    used.add(candidate)
    return candidate


def _issue_number(task_id: str) -> int | None:
    m = _GH_ID.match(task_id)
    return int(m.group(1)) if m else None


def export(tasks: Sequence[TaskSpec], statuses: Mapping[str, TaskStatus | str] | None = None) -> str:
    """A shell script of ``gh`` commands that bring GitHub's issues up to date with ``tasks``.

    Tasks ``GH-<n>`` are edited (``gh issue edit n``), the others created
    (``gh issue create``, the new number read back from the URL gh prints);
    completed tasks are closed. Dependencies are ``Depends on #N`` lines of
    the body, capabilities ``cap:NAME`` labels.
    """
    order = topological_order(tasks)
    by_id = {t.id: t for t in tasks}
    used: set[str] = set()
    ref: dict[str, str] = {}  # task id -> shell word for its number
    for task_id in order:
        number = _issue_number(task_id)
        ref[task_id] = str(number) if number is not None else f'"${_var(task_id, used)}"'
    out = [
        "#!/bin/sh",
        "# Brings GitHub's issues up to date with an InfraFabric board",
        "# (written by `ifctl board export --format gh-issues`). Read it, then run it",
        "# inside a clone of the repository (or with GH_REPO=OWNER/NAME set).",
        "set -eu",
        "# new_issue VAR ARGS...: create an issue and keep its number in VAR",
        "new_issue() { _var=$1; shift; _url=$(gh issue create \"$@\"); echo \"$_url\"; "
        "eval \"$_var=\\${_url##*/}\"; }",
        "",
    ]
    labels = sorted({c for t in tasks for c in t.capabilities})
    for capability in labels:
        out.append(f"gh label create {shlex.quote(capability_label(capability))} --force "
                   "--description 'InfraFabric capability'")
    if labels:
        out.append("")
    closing: list[str] = []
    for task_id in order:
        task = by_id[task_id]
        body = _body_word(task, ref)
        label_args = "".join(f" {flag} {shlex.quote(capability_label(c))}" for c in task.capabilities
                             for flag in ["--add-label" if _issue_number(task_id) else "--label"])
        number = _issue_number(task_id)
        if number is not None:
            out.append(f"gh issue edit {number} --title {shlex.quote(task.title)} --body {body}{label_args}")
        else:
            var = ref[task_id][2:-1]
            out.append(f"new_issue {var} --title {shlex.quote(task.title)} --body {body}{label_args}")
        status = (statuses or {}).get(task_id)
        if status is not None and str(status).lower() == TaskStatus.COMPLETED.value:
            closing.append(f"gh issue close {ref[task_id]}")
    if closing:
        out += ["", "# completed tasks", *closing]
    return "\n".join(out) + "\n"


def _body_word(task: TaskSpec, ref: Mapping[str, str]) -> str:
    """The issue body as one shell word: quoted text, with ``"$N_X"`` where a new issue's number goes."""
    parts: list[str] = []
    text = task.description.strip()
    if task.acceptance_criteria:
        criteria = "\n".join(f"- [ ] {' '.join(c.split())}" for c in task.acceptance_criteria)
        text = (text + "\n\n" if text else "") + "## Acceptance criteria\n\n" + criteria
    extra = {k: v for k, v in task.model_dump(mode="json", exclude_defaults=True).items()
             if k in _BODY_FIELDS}
    if extra:  # what an issue has no place for, in a comment GitHub does not show
        note = json.dumps(extra, ensure_ascii=False, separators=(", ", ": ")).replace(">", "\\u003e")
        text = (text + "\n\n" if text else "") + f"<!-- {EXTENSION}: {note} -->"
    words: list[str] = []
    if task.dependencies:
        text = text + "\n\n" if text else ""
        for n, dep in enumerate(task.dependencies):
            text += ("\n" if n else "") + "Depends on #"
            number = ref.get(dep, f'"$N_{dep}"')
            if number.startswith('"'):
                words.append(shlex.quote(text))
                words.append(number)
                text = ""
            else:
                text += number
    if text or not words:
        words.append(shlex.quote(text))
    parts.extend(words)
    return "".join(parts)


def looks_like(data: Any) -> bool:
    """Content sniffing: a JSON list of objects with ``number`` and ``title``."""
    if isinstance(data, dict) and isinstance(data.get("issues"), list):
        data = data["issues"]
    return (isinstance(data, list) and bool(data) and isinstance(data[0], dict)
            and "number" in data[0] and "title" in data[0])
