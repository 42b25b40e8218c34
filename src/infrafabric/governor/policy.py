"""The resource policy as a YAML file, validated strictly.

A policy file has one top-level mapping, ``resource_policy:``::

    resource_policy:
      max_swarms_per_task: 3              # integer, 1..100
      max_cost_per_task: "10.00"          # dollars: a string or a number
      min_capability_match: 0.7           # coverage, 0..1
      circuit_breaker_failure_threshold: 3  # integer, 1..1000
      push_fanout: 3                      # integer, 1..1000: waiting agents a task is pushed to at once
      escalation_webhook: https://ops.example/hooks/if  # optional: escalations POSTed here

Keys left out keep their defaults. Every problem — an unknown or repeated
key, a value of the wrong type, a value out of range, malformed YAML — is
reported as ``SOURCE:LINE: resource_policy.KEY: what is wrong`` (all of
them, one per line) in a :class:`~infrafabric.errors.ConfigurationError`.
Numbers are read from the YAML text itself, so dollars never pass through
a binary float.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infrafabric.bus.bounds import read_limited
from infrafabric.bus.url import redact_url
from infrafabric.errors import ConfigurationError
from infrafabric.governor.models import MICROS, ResourcePolicy, format_usd, usd

__all__ = ["POLICY_KEYS", "dump_policy", "load_policy", "parse_policy", "plain_usd", "policy_as_dict"]

ROOT = "resource_policy"

#: YAML key -> (ResourcePolicy field, what the value must be)
POLICY_KEYS: dict[str, tuple[str, str]] = {
    "max_swarms_per_task": ("max_swarms_per_task", "an integer"),
    "max_cost_per_task": ("max_cost_per_task_micros", "an amount of dollars (string or number)"),
    "min_capability_match": ("min_capability_match", "a number from 0 to 1"),
    "circuit_breaker_failure_threshold": ("circuit_breaker_failure_threshold", "an integer"),
    "push_fanout": ("push_fanout", "an integer"),
    "escalation_webhook": ("escalation_webhook", "an http(s) URL"),
}
_FIELD_TO_KEY = {field: key for key, (field, _) in POLICY_KEYS.items()}

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_STR = "tag:yaml.org,2002:str"
_KIND = {_INT: "an integer", _FLOAT: "a number", _STR: "a string", "tag:yaml.org,2002:bool": "a boolean",
         "tag:yaml.org,2002:null": "empty (null)"}


def plain_usd(micros: int) -> str:
    """Micro-dollars as an exact decimal string of dollars, at least cents:
    ``2_500_000`` -> ``"2.50"``, ``1`` -> ``"0.000001"`` (for CSV and YAML)."""
    text = f"{abs(Decimal(micros)) / MICROS:.6f}".rstrip("0")
    whole, frac = text.split(".")
    return f"{'-' if micros < 0 else ''}{whole}.{frac.ljust(2, '0')}"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _KIND.get(node.tag, f"a {node.tag} value")


def _number(node: yaml.ScalarNode) -> Decimal:
    """The exact value of an int or float scalar, from its text."""
    if node.tag == _INT:
        value = yaml.SafeLoader.construct_yaml_int(yaml.SafeLoader(""), node)
        return Decimal(int(value))
    text = node.value.replace("_", "")
    try:
        number = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"{node.value!r} is not a finite number") from exc
    if not number.is_finite():
        raise ValueError(f"{node.value!r} is not a finite number")
    return number


def _value(key: str, node: yaml.Node) -> Any:
    """The Python value for ``key`` or a ValueError saying what is wrong."""
    allowed: tuple[str, ...]
    if key in ("max_swarms_per_task", "circuit_breaker_failure_threshold", "push_fanout"):
        allowed, expected = (_INT,), "an integer"
    elif key == "min_capability_match":
        allowed, expected = (_INT, _FLOAT), "a number from 0 to 1"
    elif key == "escalation_webhook":
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return None
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
            raise ValueError(f"must be an http(s) URL, got {_kind(node)}")
        if not node.value.startswith(("http://", "https://")) or any(c.isspace() for c in node.value):
            raise ValueError(f"must be an http:// or https:// URL, got {node.value!r}")
        return node.value
    else:  # max_cost_per_task: dollars, as a string or a number
        allowed, expected = (_INT, _FLOAT, _STR), "an amount of dollars (string or number)"
    if not isinstance(node, yaml.ScalarNode) or node.tag not in allowed:
        shown = f" ({node.value!r})" if isinstance(node, yaml.ScalarNode) and node.value else ""
        raise ValueError(f"must be {expected}, got {_kind(node)}{shown}")
    if node.tag != _STR:
        number = _number(node)
        if key != "max_cost_per_task":
            return int(number) if node.tag == _INT else number
        text = str(number) if node.tag == _INT else node.value.replace("_", "")
    else:
        text = node.value
    try:
        return usd(text, what="amount")
    except ConfigurationError as exc:
        raise ValueError(exc.message.replace("amount ", "", 1)) from None


def parse_policy(text: str, source: str = "<policy>") -> ResourcePolicy:
    """Parse and validate a policy document; raise ConfigurationError listing
    every problem with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigurationError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigurationError(f"{source}: the policy is nested too deeply to be a policy") from None
    if root is None:
        raise ConfigurationError(f"{source}: empty policy file: expected a top-level "
                                 f"'{ROOT}:' mapping", hint=_HINT)
    if not isinstance(root, yaml.MappingNode):
        raise ConfigurationError(f"{source}:{_line(root)}: expected a top-level '{ROOT}:' mapping, "
                                 f"got {_kind(root)}", hint=_HINT)
    problems: list[str] = []
    body: yaml.Node | None = None
    for key_node, value_node in root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key != ROOT:
            problems.append(f"{source}:{_line(key_node)}: unknown top-level key {key!r} "
                            f"(expected only '{ROOT}')")
        elif body is not None:
            problems.append(f"{source}:{_line(key_node)}: '{ROOT}' appears twice "
                            f"(first on line {_line(body)})")
        else:
            body = value_node
    if body is None:
        if not problems:
            problems.append(f"{source}: no '{ROOT}:' mapping")
        raise _error(problems, source)
    if isinstance(body, yaml.ScalarNode) and body.tag == "tag:yaml.org,2002:null":
        problems.append(f"{source}:{_line(body)}: '{ROOT}' is empty; give a mapping "
                        f"(or {{}} for the defaults)")
        raise _error(problems, source)
    if not isinstance(body, yaml.MappingNode):
        problems.append(f"{source}:{_line(body)}: '{ROOT}' must be a mapping, got {_kind(body)}")
        raise _error(problems, source)

    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in body.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        where = f"{source}:{_line(key_node)}"
        if key not in POLICY_KEYS:
            problems.append(f"{where}: {ROOT}.{key}: unknown key (known: {', '.join(POLICY_KEYS)})")
            continue
        assert key is not None
        if key in lines:
            problems.append(f"{where}: {ROOT}.{key}: repeated (first on line {lines[key]})")
            continue
        lines[key] = _line(key_node)
        try:
            values[POLICY_KEYS[key][0]] = _value(key, value_node)
        except ValueError as exc:
            problems.append(f"{source}:{_line(value_node)}: {ROOT}.{key}: {exc}")
    try:
        policy = ResourcePolicy(**values)
    except ValidationError as exc:
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            key = _FIELD_TO_KEY.get(field, field)
            problems.append(f"{source}:{lines.get(key, '?')}: {ROOT}.{key}: {_range_message(key, err)}")
        raise _error(problems, source) from None
    if problems:
        raise _error(problems, source)
    return policy


def _by_line(problem: str, source: str) -> int:
    rest = problem[len(source) + 1:]
    number = rest.split(":", 1)[0]
    return int(number) if number.isdigit() else 0


_HINT = "see `ifctl governor policy --help` for the format"


def _range_message(key: str, err: Any) -> str:
    ctx = err.get("ctx") or {}
    got = err.get("input")
    money = key == "max_cost_per_task"
    shown = format_usd(got) if money and isinstance(got, int) else got
    if isinstance(shown, str):
        shown = redact_url(shown)[:200]  # a webhook's password never reaches a message
    bound = {"greater_than": "more than {}", "greater_than_equal": "at least {}", "less_than": "less than {}",
             "less_than_equal": "at most {}"}.get(err["type"])
    if bound and ctx:
        limit = next(iter(ctx.values()))
        if money and isinstance(limit, int):
            limit = format_usd(limit)
        return f"must be {bound.format(limit)}, got {shown}"
    return f"{err['msg']}, got {shown}"


def _error(problems: list[str], source: str) -> ConfigurationError:
    problems = sorted(problems, key=lambda p: _by_line(p, source))
    if len(problems) == 1:
        return ConfigurationError(f"invalid resource policy: {problems[0]}", hint=_HINT)
    listed = "\n".join(f"  {p}" for p in problems)
    return ConfigurationError(f"invalid resource policy: {len(problems)} problems\n{listed}", hint=_HINT)


def load_policy(path: str | Path) -> ResourcePolicy:
    """Read and validate a policy file; every failure names the path."""
    p = Path(path)
    try:
        data = read_limited(p, what="policy file", limit=1024 * 1024)
    except FileNotFoundError:
        raise ConfigurationError(f"{p}: no such policy file") from None
    except IsADirectoryError:
        raise ConfigurationError(f"{p}: is a directory, not a policy file") from None
    except OSError as exc:
        raise ConfigurationError(f"{p}: cannot read the policy file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigurationError(f"{p}:{line}: not UTF-8 text (byte {exc.start})") from None
    return parse_policy(text, str(p))


def policy_as_dict(policy: ResourcePolicy) -> dict[str, Any]:
    """The policy under its YAML keys, dollars as exact decimal strings."""
    return {
        "max_swarms_per_task": policy.max_swarms_per_task,
        "max_cost_per_task": plain_usd(policy.max_cost_per_task_micros),
        "min_capability_match": str(policy.min_capability_match),
        "circuit_breaker_failure_threshold": policy.circuit_breaker_failure_threshold,
        "push_fanout": policy.push_fanout,
        "escalation_webhook": policy.escalation_webhook,
    }


def dump_policy(policy: ResourcePolicy) -> str:
    """The policy as a YAML document that :func:`parse_policy` reads back unchanged."""
    d = policy_as_dict(policy)
    return (f"{ROOT}:\n"
            f"  max_swarms_per_task: {d['max_swarms_per_task']}\n"
            f"  max_cost_per_task: \"{d['max_cost_per_task']}\"\n"
            f"  min_capability_match: {d['min_capability_match']}\n"
            f"  circuit_breaker_failure_threshold: {d['circuit_breaker_failure_threshold']}\n"
            f"  push_fanout: {d['push_fanout']}\n"
            + (f"  escalation_webhook: {json.dumps(hook)}\n" if (hook := d["escalation_webhook"]) else ""))
