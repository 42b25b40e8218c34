"""Small YAML files read as nodes, so every problem can name its line: the
capability map (:mod:`infrafabric.coordinator.infer`) and the seeds' STATUS
files (:mod:`infrafabric.coordinator.status_files`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from infrafabric.bus.bounds import read_limited
from infrafabric.errors import ConfigurationError

__all__ = ["MAX_FILE_BYTES", "compose_file", "line_of", "read_text", "scalar_value"]

#: the largest mapping or STATUS file read
MAX_FILE_BYTES = 1024 * 1024


def line_of(node: yaml.Node) -> int:
    """The 1-based line a node starts on."""
    return node.start_mark.line + 1 if node.start_mark is not None else 0


def read_text(path: str | os.PathLike[str], *, what: str) -> str:
    """The UTF-8 text of a regular file of at most :data:`MAX_FILE_BYTES`;
    :class:`ConfigurationError` naming the file otherwise."""
    shown = os.fspath(path)
    try:
        data = read_limited(path, what=what, limit=MAX_FILE_BYTES)
    except OSError as exc:
        raise ConfigurationError(f"{what} {shown}: cannot read it: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigurationError(f"{what} {shown}:{line}: not UTF-8 text (byte {exc.start})") from None


def compose_file(path: str | Path, *, what: str, text: str | None = None) -> yaml.Node | None:
    """The YAML node tree of a file (None when it is empty); syntax errors,
    anchors/aliases and tags are a :class:`ConfigurationError` naming the
    file and line."""
    shown = os.fspath(path)
    if text is None:
        text = read_text(path, what=what)
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                line = event.start_mark.line + 1 if event.start_mark is not None else 0
                raise ConfigurationError(f"{what} {shown}:{line}: anchors and aliases (& *) are not allowed")
            tag = getattr(event, "tag", None)
            if tag and tag not in ("!", "tag:yaml.org,2002:str"):
                line = event.start_mark.line + 1 if event.start_mark is not None else 0
                raise ConfigurationError(f"{what} {shown}:{line}: tagged values ({tag}) are not allowed")
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigurationError(f"{what} {shown}{where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigurationError(f"{what} {shown}: nested too deeply") from None


def scalar_value(node: yaml.ScalarNode) -> Any:
    """A scalar as plain data: None, bool, int, float, else its text
    (timestamps stay text, as written)."""
    tag = node.tag.rsplit(":", 1)[-1]
    raw = node.value
    if tag == "null":
        return None
    if tag == "bool":
        return raw.lower() in ("true", "yes", "on", "y")
    if tag == "int":
        try:
            return int(raw.replace("_", ""), 0) if len(raw) < 40 else raw
        except ValueError:
            return raw
    if tag == "float":
        try:
            return float(raw.replace("_", ""))
        except ValueError:
            return raw
    return raw
