"""Capability manifests: what a swarm declares about itself.

A manifest is a JSON (or YAML) object::

    {"id": "session-4-sip",
     "capabilities": ["integration:sip", "code-analysis:python"],
     "cost_per_hour": "2.00",
     "reputation": 0.9,
     "model": "haiku",
     "budget": "10.00"}

``id``, ``capabilities`` and ``cost_per_hour`` are required. A capability is
one of :data:`~infrafabric.governor.models.BUILTIN_CAPABILITIES` or a custom
``domain:skill`` (lowercase). Dollars are strings or numbers and become
integer micro-dollars exactly. :data:`CAPABILITY_MANIFEST_SCHEMA` is the
JSON Schema (draft 2020-12) of the format, generated from the pydantic model
that does the validating, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from infrafabric.bus.bounds import brief, parse_failure, read_limited
from infrafabric.coordinator.models import TASK_ID_PATTERN
from infrafabric.errors import ConfigurationError
from infrafabric.governor.models import BUILTIN_CAPABILITIES, SwarmProfile, format_usd, usd

__all__ = [
    "CAPABILITY_MANIFEST_SCHEMA",
    "CUSTOM_CAPABILITY_PATTERN",
    "CapabilityManifest",
    "load_manifest",
    "parse_manifest",
    "read_manifest",
    "validate_manifest",
]

#: a custom capability: ``domain:skill``, lowercase words
CUSTOM_CAPABILITY_PATTERN = r"^[a-z0-9][a-z0-9_.\-]*:[a-z0-9][a-z0-9_.\-]*$"
_CUSTOM = re.compile(CUSTOM_CAPABILITY_PATTERN)
_SWARM_ID = re.compile(f"^{TASK_ID_PATTERN}$")


def _dollars(value: Any) -> Any:
    """Dollars (string or number, never a boolean) to micro-dollars."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"must be an amount of dollars (string or number), got {type(value).__name__}")
    try:
        return usd(str(value) if isinstance(value, float) else value)
    except ConfigurationError as exc:
        raise ValueError(exc.message.replace("amount ", "", 1)) from None


#: dollars as text: digits with at most 6 decimals, optionally after a '$'
DOLLARS_PATTERN = r"^\$?[0-9]+(\.[0-9]{1,6})?$"


def _micros(minimum: int) -> Any:
    def check(value: int) -> int:
        if value < minimum:
            bound = "more than" if minimum else "at least"
            raise ValueError(f"must be {bound} $0.00, got {format_usd(value)}")
        return value

    return AfterValidator(check)


#: dollars per hour (> 0), as micro-dollars
PositiveDollars = Annotated[int, BeforeValidator(_dollars), _micros(1), WithJsonSchema(
    {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": DOLLARS_PATTERN}]})]
#: dollars (>= 0), as micro-dollars
Dollars = Annotated[int, BeforeValidator(_dollars), _micros(0), WithJsonSchema(
    {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DOLLARS_PATTERN}]})]
ManifestCapability = Annotated[str, WithJsonSchema(
    {"anyOf": [{"enum": sorted(BUILTIN_CAPABILITIES)},
               {"type": "string", "pattern": CUSTOM_CAPABILITY_PATTERN}]})]
Reputation = Annotated[Decimal, Field(ge=0, le=1), WithJsonSchema(
    {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1},
               {"type": "string", "pattern": r"^(0(\.[0-9]+)?|1(\.0+)?)$"}]})]


class CapabilityManifest(BaseModel):
    """A swarm's capability manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="InfraFabric capability manifest")

    id: str = Field(description="The swarm id: letters, digits and ._-:@+=~, at most 128 characters.",
                    pattern=f"^{TASK_ID_PATTERN}$")
    capabilities: list[ManifestCapability] = Field(
        min_length=1, description="What the swarm can do: built-in capabilities or custom 'domain:skill'.")
    cost_per_hour: PositiveDollars = Field(
        description="Dollars per hour, as a string or number (at most 6 decimals).")
    reputation: Reputation = Field(default=Decimal("1"), description="0..1; 1 is best.")
    model: str | None = Field(default=None, min_length=1, max_length=128,
                              description="The model the swarm runs, e.g. haiku, sonnet, opus.")
    budget: Dollars | None = Field(
        default=None, description="Budget limit in dollars; absent keeps the current one.")

    @field_validator("capabilities", mode="before")
    @classmethod
    def _known_or_custom(cls, caps: Any) -> Any:
        if not isinstance(caps, list):
            return caps  # pydantic reports the type
        for i, cap in enumerate(caps):
            if not isinstance(cap, str):
                raise ValueError(f"item {i} must be a string, got {type(cap).__name__}")
            if cap not in BUILTIN_CAPABILITIES and not _CUSTOM.match(cap):
                raise ValueError(f"item {i} ({cap!r}) is neither a built-in capability nor "
                                 f"a custom 'domain:skill' in lowercase")
        if len(set(caps)) != len(caps):
            dupes = sorted({c for c in caps if caps.count(c) > 1})
            raise ValueError(f"listed more than once: {', '.join(dupes)}")
        return caps

    @field_validator("reputation", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise ValueError(f"must be a number from 0 to 1, got {type(value).__name__}")
        return Decimal(str(value)) if isinstance(value, float) else value

    def to_profile(self) -> SwarmProfile:
        return SwarmProfile(id=self.id, capabilities=list(self.capabilities),
                            cost_per_hour_micros=self.cost_per_hour, reputation=self.reputation,
                            model=self.model)

    @property
    def budget_micros(self) -> int | None:
        return self.budget

    @property
    def custom_capabilities(self) -> list[str]:
        """The capabilities that are not built in (worth a second look for typos)."""
        return sorted(set(self.capabilities) - BUILTIN_CAPABILITIES)


def _schema() -> dict[str, Any]:
    schema = CapabilityManifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["properties"]["reputation"]["default"] = 1
    return schema


#: JSON Schema of a capability manifest
CAPABILITY_MANIFEST_SCHEMA: dict[str, Any] = _schema()


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(manifest)"


def _reason(err: Any) -> str:
    kind = str(err["type"])
    ctx = err.get("ctx") or {}
    got = err.get("input")
    shown = brief(got, 80)
    field = str(err["loc"][0]) if err["loc"] else ""
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "too_short" and field == "capabilities":
        return "must list at least one capability"
    if kind == "string_pattern_mismatch" and field == "id":
        return f"must be letters, digits and ._-:@+=~ (1 to 128 characters), got {shown}"
    if kind == "decimal_parsing" or (kind.startswith("decimal_") and field == "reputation"):
        return f"must be a number from 0 to 1, got {shown}"
    bound = {"greater_than": "more than", "greater_than_equal": "at least", "less_than": "less than",
             "less_than_equal": "at most"}.get(kind)
    if bound and ctx:
        return f"must be {bound} {next(iter(ctx.values()))}, got {shown}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind.endswith(("_type", "_parsing", "too_short", "too_long")):
        msg = f"{msg[0].lower()}{msg[1:]}, got {shown}"
    return msg


def parse_manifest(data: Any, source: str | None = None) -> CapabilityManifest:
    """Validate a manifest; a ConfigurationError names every bad field and why
    (and ``source``, the file it came from, when given)."""
    where = f"{source}: " if source else ""
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where}a capability manifest must be an object (mapping), "
                                 f"got {type(data).__name__}")
    try:
        return CapabilityManifest.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_where(tuple(e['loc']))}: {_reason(e)}" for e in exc.errors()]
        if len(problems) == 1:
            raise ConfigurationError(f"{where}invalid capability manifest: {problems[0]}") from None
        listed = "\n".join(f"  {p}" for p in problems)
        raise ConfigurationError(f"{where}invalid capability manifest: {len(problems)} problems\n"
                                 f"{listed}") from None


def validate_manifest(data: Any, source: str | None = None) -> SwarmProfile:
    """Validate a manifest and return the swarm profile it declares."""
    return parse_manifest(data, source).to_profile()


def read_manifest(path: str | Path) -> Any:
    """The raw data of a JSON or YAML manifest file (not yet validated);
    every failure names the path."""
    p = Path(path)
    try:
        text = read_limited(p, what="manifest", limit=1024 * 1024).decode("utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"{p}: no such manifest file") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigurationError(f"{p}: cannot read the manifest: {exc.strerror or exc}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            line = f":{exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
            raise ConfigurationError(f"{p}{line}: invalid YAML: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{p}: invalid YAML: {exc}") from None
        except (RecursionError, ValueError) as exc:
            raise ConfigurationError(f"{p}: not a usable manifest: {parse_failure(exc)}") from None
    try:
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{p}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except (RecursionError, ValueError) as exc:
        raise ConfigurationError(f"{p}: not a usable manifest: {parse_failure(exc)}") from None


def load_manifest(path: str | Path) -> CapabilityManifest:
    """Read and validate a JSON or YAML manifest file."""
    return parse_manifest(read_manifest(path), str(path))
