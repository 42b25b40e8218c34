"""Helpers the board formats share: JSON/YAML line numbers, labels as
capabilities, priority words."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from infrafabric.bus.bounds import parse_failure
from infrafabric.coordinator.board import Problems
from infrafabric.coordinator.models import CAPABILITY_PATTERN

_CAPABILITY = re.compile(CAPABILITY_PATTERN)

#: label prefixes that name a capability: ``cap:python`` -> ``python``
CAPABILITY_LABEL_PREFIXES = ("cap:", "capability:", "skill:")


@dataclass
class Node:
    """Where a part of a JSON/YAML document is: its line, and its children's."""

    line: int = 0
    keys: dict[str, Node] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)
    items: list[Node] = field(default_factory=list)

    def key(self, name: str) -> Node:
        return self.keys.get(name) or Node(self.key_lines.get(name, self.line))

    def item(self, index: int) -> Node:
        return self.items[index] if index < len(self.items) else Node(self.line)

    def at(self, name: str) -> int:
        """The line of key ``name`` (else this node's line)."""
        return self.key_lines.get(name) or self.line


def _convert(node: yaml.Node, depth: int = 0) -> Node:
    out = Node(node.start_mark.line + 1 if node.start_mark is not None else 0)
    if depth > 50:
        return out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value not in out.key_lines:
                out.key_lines[key_node.value] = key_node.start_mark.line + 1
                out.keys[key_node.value] = _convert(value_node, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        out.items = [_convert(item, depth + 1) for item in node.value]
    return out


def node_lines(text: str, line_offset: int = 0) -> Node:
    """The line numbers of a JSON or YAML document's parts (best effort: empty when unreadable)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError, ValueError):
        return Node()
    if root is None:
        return Node()
    tree = _convert(root)
    if line_offset:
        _shift(tree, line_offset)
    return tree


def _shift(node: Node, offset: int) -> None:
    node.line += offset
    for key in node.key_lines:
        node.key_lines[key] += offset
    for child in [*node.keys.values(), *node.items]:
        _shift(child, offset)


def load_json(text: str, p: Problems, what: str) -> Any:
    """Parse JSON, reporting a syntax error with its line; None when unreadable."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        p.error(f"not valid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno)
    except (RecursionError, ValueError) as exc:
        p.error(f"not a usable {what} file: {parse_failure(exc)}")
    return None


def label_capability(label: str) -> str | None:
    """``cap:python`` / ``capability:python`` / ``skill:rust`` -> the capability; other labels -> None.

    Raises :class:`ValueError` when the label has a capability prefix but names no valid capability.
    """
    lowered = label.strip().lower()
    for prefix in CAPABILITY_LABEL_PREFIXES:
        if lowered.startswith(prefix):
            name = lowered[len(prefix):].strip()
            if not _CAPABILITY.fullmatch(name):
                raise ValueError(
                    f"label {label!r} names no valid capability (lowercase words, optionally "
                    "domain:skill, like cap:python or cap:infra:k8s)"
                )
            return name
    return None


def label_capabilities(labels: Sequence[str], bad: Callable[[str], None]) -> list[str]:
    """The capabilities ``labels`` name (:func:`label_capability`), each once,
    in order; a label that names no valid one is reported through ``bad``."""
    capabilities: list[str] = []
    for label in labels:
        try:
            capability = label_capability(label)
        except ValueError as exc:
            bad(str(exc))
            continue
        if capability is not None and capability not in capabilities:
            capabilities.append(capability)
    return capabilities


def capability_label(capability: str) -> str:
    return f"cap:{capability}"


#: the key under which a task's fields a format has no place for are written (and read back)
EXTENSION = "infrafabric"
EXTENSION_FIELDS = frozenset({"capabilities", "kind", "priority", "estimate_hours", "model", "deliverable",
                              "budget_micros", "section", "paths", "branch"})

#: priority words (task-master, Backlog.md) -> TaskSpec priority (higher first)
PRIORITY_WORDS = {"critical": 2, "urgent": 2, "high": 1, "medium": 0, "normal": 0, "low": -1}


def priority_word(priority: int, *, critical: bool = True) -> str:
    if priority >= 2 and critical:
        return "critical"
    if priority >= 1:
        return "high"
    if priority <= -1:
        return "low"
    return "medium"


def shorten(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
