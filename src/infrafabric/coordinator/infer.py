"""Capabilities inferred for tasks that list none (``ifctl board import``).

An imported seed board names no capabilities, so every swarm would qualify
for every task. For a task with none, fixed, documented rules infer **at most
two**, so a swarm that has the skills qualifies (three would all be needed at
the policy's 70 % coverage):

1. **What the task is about**: the first :data:`SECTION_RULES` entry its
   section heading matches ("IF.coordinator Tasks" → ``infra:distributed-systems``,
   "IF.governor" → ``governance:policy``, "IF.chassis" → ``wasm:runtime``,
   "Session 4 (SIP)" → ``integration:sip``, "CLI" → ``cli:design``,
   "Documentation" → ``docs:technical-writing``...); without one, the first
   :data:`KEYWORD_RULES` entry whose whole words its title holds (the most
   specific first: SIP/NDI/WebRTC/H.323, etcd/NATS/CAS →
   ``infra:distributed-systems``, wasm/sandbox → ``wasm:runtime``, security →
   ``architecture:security``, docs/runbook → ``docs:technical-writing``...),
   else its description.
2. **What it produces**: the first :data:`PATH_RULES` entry (languages first)
   that a file of its ``paths``, its ``deliverable`` or a file named in its
   title or description matches (``*.py`` → ``code-analysis:python``, ``*.rs``
   → ``code-analysis:rust``, ``*.ts``/``*.js`` → ``code-analysis:javascript``,
   ``*.go`` → ``code-analysis:go``, ``tests/`` → ``testing:integration``,
   ``docs/``/``*.md`` → ``docs:technical-writing``, ``Dockerfile`` →
   ``infra:docker``, ``*.wasm`` → ``wasm:runtime``...).

The names are the seeds' vocabulary (``code-analysis:python``,
``infra:distributed-systems``, ``docs:technical-writing``, ``cli:design``,
``integration:sip``...) and, where the seeds name none, the governor's
built-in ones that ``ifctl swarm spawn`` detects (``governance:policy``,
``testing:integration``, ``wasm:runtime``). On the Phase 0 board the seeds'
sessions (the demo's fleet) qualify for every task. Inference is
deterministic (same task, same capabilities, sorted) and never touches a task
that lists capabilities.

A capability map (YAML, ``--caps-map``) overrides it::

    infer: true            # false: no rule runs, only `tasks:` below applies
    builtin: true          # false: only this file's rules run, not the built-in ones
    tasks:                 # explicit capabilities per task id (no inference for them)
      P0.1.1: [infra:distributed-systems, code-analysis:python]
    keywords:              # extra keyword rules (whole words, case-insensitive)
      - {capability: integration:sip, words: [pbx, asterisk]}
    paths:                 # extra path rules (file-name globs, or a directory name ending in /)
      - {capability: infra:docker, patterns: ["compose.yaml", "docker/"]}
    sections:              # extra section rules (text the section heading contains)
      - {capability: infra:networking, contains: ["IF.bus"]}

The same keyword and path rules extract the capabilities a blocker needs
from its message (:func:`extract_required_capabilities`), as the seeds'
``_extract_required_capabilities`` does.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from infrafabric.coordinator.models import CAPABILITY_PATTERN, TaskSpec
from infrafabric.coordinator.yamlnodes import compose_file, line_of, read_text, scalar_value
from infrafabric.errors import ConfigurationError

__all__ = [
    "KEYWORD_RULES",
    "PATH_RULES",
    "SECTION_RULES",
    "CapabilityMap",
    "Inferred",
    "apply_inference",
    "extract_required_capabilities",
    "infer_capabilities",
    "load_capability_map",
]

_CAPABILITY = re.compile(f"^{CAPABILITY_PATTERN}$")

#: (capability, file-name globs; a pattern ending in ``/`` names a directory anywhere in the path)
PATH_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("code-analysis:python", ("*.py", "*.pyi", "pyproject.toml", "setup.py", "setup.cfg")),
    ("code-analysis:rust", ("*.rs", "Cargo.toml")),
    ("code-analysis:javascript", ("*.js", "*.mjs", "*.cjs", "*.ts", "*.tsx", "*.jsx", "package.json")),
    ("code-analysis:go", ("*.go", "go.mod")),
    ("testing:integration", ("tests/", "test/", "test_*.py", "*_test.py", "*_test.go", "*.test.js",
                             "*.spec.ts", "conftest.py")),
    ("docs:technical-writing", ("docs/", "*.md", "*.rst", "*.adoc")),
    ("infra:docker", ("Dockerfile", "*.dockerfile", "docker-compose.yml", "docker-compose.yaml",
                      "compose.yaml")),
    ("infra:kubernetes", ("Chart.yaml", "kustomization.yaml", "kustomization.yml", "k8s/", "helm/")),
    ("wasm:runtime", ("*.wasm", "*.wat", "wasm/")),
    ("architecture:patterns", ("*.proto",)),
)

#: (capability, texts a section heading contains, case-insensitive; whole words): the first that
#: matches says what the section's tasks are about (the Phase 0 board's components and sessions first)
SECTION_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("infra:distributed-systems", ("IF.coordinator", "IF.bus", "coordinator", "event bus")),
    ("governance:policy", ("IF.governor", "governor", "governance", "policy")),
    ("wasm:runtime", ("IF.chassis", "chassis", "sandbox", "wasm")),
    ("security:audit", ("IF.witness", "witness", "audit", "security")),
    ("integration:ndi", ("NDI",)),
    ("integration:webrtc", ("WebRTC",)),
    ("integration:h323", ("H.323", "H323")),
    ("integration:sip", ("SIP",)),
    ("cli:design", ("CLI", "command line")),
    ("docs:technical-writing", ("Documentation", "Docs")),
    ("testing:integration", ("Testing", "Tests", "QA")),
)

#: (capability, whole words or phrases of the title and description, case-insensitive): the most
#: specific first, since the first that matches says what a task without a section rule is about
KEYWORD_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("integration:sip", ("sip",)),
    ("integration:ndi", ("ndi",)),
    ("integration:webrtc", ("webrtc", "sdp")),
    ("integration:h323", ("h.323", "h323", "mcu")),
    ("infra:distributed-systems", ("etcd", "nats", "jetstream", "event bus", "pub/sub", "pubsub", "cas",
                                   "compare-and-swap", "consensus", "distributed", "broadcast",
                                   "coordination", "latency", "raft", "lease", "leases")),
    ("infra:networking", ("network", "networking", "tcp", "udp", "socket", "sockets", "grpc", "dns",
                          "load balancer", "firewall")),
    ("wasm:runtime", ("wasm", "webassembly", "wasmtime", "wasi", "sandbox")),
    ("architecture:security", ("security", "secure", "credential", "credentials", "secret", "secrets",
                               "auth", "authentication", "authorization", "isolation", "tls",
                               "encryption", "vulnerability", "hash chain", "audit")),
    ("docs:technical-writing", ("docs", "documentation", "runbook", "guide", "readme", "onboarding",
                                "tutorial", "help text")),
    ("docs:api-design", ("api design", "openapi", "api docs", "api reference")),
    ("architecture:patterns", ("architecture", "interface design", "type signatures", "diagram",
                               "diagrams", "design pattern", "schema", "schemas")),
    ("cli:design", ("cli", "command line", "command-line", "subcommand", "subcommands")),
    ("cli:testing", ("cli test", "cli tests", "cli testing")),
    ("testing:integration", ("test", "tests", "testing", "integration test", "integration tests",
                             "fixture", "fixtures", "mock", "mocks", "regression", "benchmark",
                             "scaffolding")),
    ("code-analysis:python", ("python", "pydantic", "pytest", "asyncio")),
    ("code-analysis:rust", ("rust", "cargo")),
    ("code-analysis:javascript", ("javascript", "typescript", "node.js", "nodejs")),
    ("code-analysis:go", ("golang",)),
    ("infra:docker", ("docker", "dockerfile", "container", "containers")),
    ("infra:kubernetes", ("kubernetes", "k8s", "helm")),
)

#: a file-like token of a deliverable or message: has a / or a dotted extension, or is a known name
_PATH_TOKEN = re.compile(r"[A-Za-z0-9_.~/\-]*[A-Za-z0-9_\-](?:/|\.[A-Za-z0-9]{1,10})?")
_NAMED_FILES = frozenset({"Dockerfile", "Makefile", "Cargo.toml", "go.mod", "package.json",
                          "pyproject.toml", "Chart.yaml"})


@dataclass(frozen=True)
class Inferred:
    """One inferred capability and the rule that produced it (for ``--why``)."""

    capability: str
    rule: str
    evidence: str

    def __str__(self) -> str:
        return f"{self.capability} ({self.rule}: {self.evidence})"

    def as_dict(self) -> dict[str, str]:
        return {"capability": self.capability, "rule": self.rule, "evidence": self.evidence}


@dataclass(frozen=True)
class CapabilityMap:
    """A capability map file (see the module's docs): explicit capabilities
    per task, extra rules, inference on or off."""

    source: str = "<built-in>"
    infer: bool = True
    builtin: bool = True
    tasks: dict[str, list[str]] = field(default_factory=dict)
    paths: tuple[tuple[str, tuple[str, ...]], ...] = ()
    sections: tuple[tuple[str, tuple[str, ...]], ...] = ()
    keywords: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def path_rules(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (PATH_RULES if self.builtin else ()) + self.paths

    def section_rules(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (SECTION_RULES if self.builtin else ()) + self.sections

    def keyword_rules(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (KEYWORD_RULES if self.builtin else ()) + self.keywords

    def warnings(self, tasks: Sequence[TaskSpec]) -> list[str]:
        """Entries of ``tasks:`` that do not apply: unknown ids, and tasks
        whose board lists capabilities (those are never changed)."""
        by_id = {t.id: t for t in tasks}
        out = []
        for task_id in self.tasks:
            if task_id not in by_id:
                out.append(f"{self.source}: task {task_id} is not on the board: its entry is unused")
            elif by_id[task_id].capabilities:
                out.append(f"{self.source}: task {task_id} lists capabilities on the board, which are "
                           "never changed: its entry is unused")
        return out


DEFAULT_MAP = CapabilityMap()


def _words(text: str, phrases: Iterable[str]) -> list[str]:
    low = text.lower()
    return [p for p in phrases
            if re.search(r"(?<![a-z0-9])" + re.escape(p.lower()) + r"(?![a-z0-9])", low)]


def _path_tokens(text: str) -> list[str]:
    found = []
    for token in _PATH_TOKEN.findall(text):
        if "/" in token or PurePosixPath(token).name in _NAMED_FILES or re.search(r"\.[A-Za-z]", token):
            found.append(token)
    return found


def _path_match(path: str, patterns: Iterable[str]) -> str | None:
    """The first pattern that matches ``path`` (file name glob, or a directory part)."""
    pure = PurePosixPath(path)
    dirs = set(pure.parts[:-1]) | ({pure.name} if path.endswith("/") else set())
    for pattern in patterns:
        if pattern.endswith("/"):
            if pattern[:-1] in dirs:
                return pattern
        elif fnmatch.fnmatchcase(pure.name, pattern):
            return pattern
    return None


def _by_paths(paths: Iterable[tuple[str, str]], rules: Sequence[tuple[str, tuple[str, ...]]]
              ) -> list[Inferred]:
    """What the path rules find, in the rules' order (languages first), then the paths'."""
    out = []
    listed = list(paths)
    for capability, patterns in rules:
        for where, path in listed:
            pattern = _path_match(path, patterns)
            if pattern is not None:
                out.append(Inferred(capability, f"path {pattern}", f"{where} {path}"))
    return out


def _by_keywords(text: str, where: str, rules: Sequence[tuple[str, tuple[str, ...]]]) -> list[Inferred]:
    out = []
    for capability, phrases in rules:
        hits = _words(text, phrases)
        if hits:
            out.append(Inferred(capability, "keyword " + ", ".join(repr(h) for h in hits), where))
    return out


def _first_each(found: Iterable[Inferred]) -> list[Inferred]:
    """One per capability (the first rule that produced it), sorted by capability."""
    seen: dict[str, Inferred] = {}
    for inferred in found:
        seen.setdefault(inferred.capability, inferred)
    return [seen[c] for c in sorted(seen)]


def infer_capabilities(spec: TaskSpec, mapping: CapabilityMap = DEFAULT_MAP) -> list[Inferred]:
    """The capabilities the rules infer for ``spec`` (whatever it lists), each
    with the rule that produced it; sorted by capability. Empty when the
    mapping switches inference off.

    At most two, so a swarm that has the skills qualifies (a task needing
    three would need all three at the policy's 70 % coverage): what the task
    is about -- the first section rule its heading matches, else the first
    keyword rule its title matches, else its description's -- and what it
    produces -- the first path rule (languages first) that its paths, its
    deliverable or a file named in its title or description match."""
    if spec.id in mapping.tasks:
        return [Inferred(c, "capability map", f"{mapping.source}: task {spec.id}")
                for c in sorted(set(mapping.tasks[spec.id]))]
    if not mapping.infer:
        return []
    about = _section_rule(spec.section, mapping) if spec.section else None
    about = about or _first(_by_keywords(spec.title, "title", mapping.keyword_rules()))
    if about is None and spec.description:
        about = _first(_by_keywords(spec.description, "description", mapping.keyword_rules()))
    paths = [("path", p) for p in spec.paths]
    if spec.deliverable:
        paths += [("deliverable", p) for p in _path_tokens(spec.deliverable)]
    paths += [("title names", p) for p in _path_tokens(spec.title)]
    paths += [("description names", p) for p in _path_tokens(spec.description)]
    produces = _first(_by_paths(paths, mapping.path_rules()))
    return _first_each(i for i in (about, produces) if i is not None)


def _section_rule(section: str, mapping: CapabilityMap) -> Inferred | None:
    for capability, texts in mapping.section_rules():
        hits = _words(section, texts)
        if hits:
            return Inferred(capability, f"section contains {hits[0]!r}", f"section {section!r}")
    return None


def _first(found: list[Inferred]) -> Inferred | None:
    return found[0] if found else None


def apply_inference(tasks: Sequence[TaskSpec], mapping: CapabilityMap | None = None
                    ) -> tuple[list[TaskSpec], dict[str, list[Inferred]]]:
    """``tasks`` with inferred capabilities for each that lists none (the
    others unchanged, the order kept), and per changed task the inferred
    capabilities with their rules."""
    mapping = mapping or DEFAULT_MAP
    out: list[TaskSpec] = []
    reasons: dict[str, list[Inferred]] = {}
    for spec in tasks:
        if spec.capabilities:
            out.append(spec)
            continue
        inferred = infer_capabilities(spec, mapping)
        if not inferred:
            out.append(spec)
            continue
        out.append(spec.model_copy(update={"capabilities": [i.capability for i in inferred]}))
        reasons[spec.id] = inferred
    return out, reasons


def extract_required_capabilities(text: str, mapping: CapabilityMap = DEFAULT_MAP) -> list[Inferred]:
    """The capabilities a blocker's message asks for (the seeds'
    ``_extract_required_capabilities``): the path and keyword rules applied
    to the text; sorted, each with the rule that produced it."""
    text = text[:8000]
    found = _by_paths([("message names", p) for p in _path_tokens(text)], mapping.path_rules())
    found += _by_keywords(text, "message", mapping.keyword_rules())
    return _first_each(found)


def blocker_needs(given: Sequence[str], task: TaskSpec | None, message: str) -> tuple[list[str], str]:
    """What a blocker needs and where that came from: the capabilities given
    with the report, else the blocked task's, else those its message asks for
    (:func:`extract_required_capabilities`). One rule for the governor's help
    and the CLI's account of it."""
    if given:
        return list(given), "given with the report"
    if task is not None and task.capabilities:
        return list(task.capabilities), f"the capabilities of task {task.id}"
    found = extract_required_capabilities(message)
    if not found:
        return [], "none given, none on the task, none found in the message: any swarm may help"
    return [f.capability for f in found], "extracted from the message: " + "; ".join(str(f) for f in found)


# -- the capability map file ------------------------------------------------------------------

_TOP_KEYS = {"version", "infer", "builtin", "tasks", "keywords", "paths", "sections"}
_RULE_LISTS = {"keywords": "words", "paths": "patterns", "sections": "contains"}


class _Errors:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def add(self, node: yaml.Node | None, problem: str) -> None:
        line = f":{line_of(node)}" if node is not None else ""
        self.problems.append(f"{self.source}{line}: {problem}")


def _text_list(node: yaml.Node, what: str, errors: _Errors) -> list[str] | None:
    if not isinstance(node, yaml.SequenceNode):
        errors.add(node, f"{what} must be a list")
        return None
    out = []
    for item in node.value:
        value = scalar_value(item) if isinstance(item, yaml.ScalarNode) else None
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            errors.add(item, f"{what}: each entry is a text of 1-200 characters")
            continue
        out.append(value)
    return out


def _capability(node: yaml.Node, errors: _Errors, what: str) -> str | None:
    value = scalar_value(node) if isinstance(node, yaml.ScalarNode) else None
    if not isinstance(value, str) or not _CAPABILITY.match(value) or len(value) > 200:
        errors.add(node, f"{what}: {value!r} is not a capability (lowercase words, optionally domain:skill)")
        return None
    return value


def _rules(node: yaml.Node, key: str, errors: _Errors) -> tuple[tuple[str, tuple[str, ...]], ...]:
    field_ = _RULE_LISTS[key]
    if not isinstance(node, yaml.SequenceNode):
        errors.add(node, f"{key} must be a list of {{capability: ..., {field_}: [...]}}")
        return ()
    out = []
    for item in node.value:
        if not isinstance(item, yaml.MappingNode):
            errors.add(item, f"{key}: each rule is a mapping {{capability: ..., {field_}: [...]}}")
            continue
        fields = {k.value: (k, v) for k, v in item.value if isinstance(k, yaml.ScalarNode)}
        unknown = sorted(set(fields) - {"capability", field_})
        if unknown:
            errors.add(item, f"{key}: unknown field(s) {', '.join(unknown)} (expected capability, {field_})")
        if "capability" not in fields or field_ not in fields:
            errors.add(item, f"{key}: a rule needs both capability and {field_}")
            continue
        capability = _capability(fields["capability"][1], errors, f"{key}: capability")
        texts = _text_list(fields[field_][1], f"{key}: {field_}", errors)
        if capability is not None and texts:
            out.append((capability, tuple(texts)))
    return tuple(out)


def parse_capability_map(text: str, source: str) -> CapabilityMap:
    """A :class:`CapabilityMap` from YAML text; :class:`ConfigurationError`
    naming the file, line and problem of each mistake."""
    root = compose_file(source, what="capability map", text=text)
    errors = _Errors(f"capability map {source}")
    if root is None:
        return CapabilityMap(source=source)
    if not isinstance(root, yaml.MappingNode):
        errors.add(root, "the top level must be a mapping (infer, builtin, tasks, keywords, paths, sections)")
        raise ConfigurationError("\n".join(errors.problems))
    infer = builtin = True
    tasks: dict[str, list[str]] = {}
    rules: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {}
    seen: set[str] = set()
    for key_node, value in root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key not in _TOP_KEYS:
            errors.add(key_node, f"unknown key {key!r} (expected one of {', '.join(sorted(_TOP_KEYS))})")
            continue
        if key in seen:
            errors.add(key_node, f"{key} is given twice")
            continue
        seen.add(key)
        if key == "version":
            if not isinstance(value, yaml.ScalarNode) or scalar_value(value) != 1:
                errors.add(value, "version must be 1")
        elif key in ("infer", "builtin"):
            flag = scalar_value(value) if isinstance(value, yaml.ScalarNode) else None
            if not isinstance(flag, bool):
                errors.add(value, f"{key} must be true or false")
            elif key == "infer":
                infer = flag
            else:
                builtin = flag
        elif key == "tasks":
            if not isinstance(value, yaml.MappingNode):
                errors.add(value, "tasks must map task ids to lists of capabilities")
                continue
            for id_node, caps_node in value.value:
                task_id = str(id_node.value) if isinstance(id_node, yaml.ScalarNode) else ""
                if not re.fullmatch(r"[A-Za-z0-9._\-:@+=~]{1,128}", task_id):
                    errors.add(id_node, f"tasks: {task_id!r} is not a task id")
                    continue
                if task_id in tasks:
                    errors.add(id_node, f"tasks: {task_id} is given twice")
                    continue
                if not isinstance(caps_node, yaml.SequenceNode):
                    errors.add(caps_node, f"tasks: {task_id}: capabilities must be a list")
                    continue
                caps = [_capability(c, errors, f"tasks: {task_id}") for c in caps_node.value]
                tasks[task_id] = [c for c in caps if c is not None]
        else:
            assert key is not None
            rules[key] = _rules(value, key, errors)
    if errors.problems:
        raise ConfigurationError("\n".join(errors.problems),
                                 hint="see docs/board-format.md, \"Capabilities inferred on import\"")
    return CapabilityMap(source=source, infer=infer, builtin=builtin, tasks=tasks,
                         paths=rules.get("paths", ()), sections=rules.get("sections", ()),
                         keywords=rules.get("keywords", ()))


def load_capability_map(path: str | Path) -> CapabilityMap:
    """Read a capability map file (UTF-8 YAML, at most 1 MB)."""
    return parse_capability_map(read_text(path, what="capability map"), str(path))
