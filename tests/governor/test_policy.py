"""The YAML resource policy and the capability manifest schema."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from infrafabric.errors import ConfigurationError
from infrafabric.governor import MICROS, ResourcePolicy, SwarmProfile
from infrafabric.governor.policy import dump_policy, load_policy, parse_policy, plain_usd, policy_as_dict
from infrafabric.governor.schema import (
    CAPABILITY_MANIFEST_SCHEMA,
    load_manifest,
    parse_manifest,
    validate_manifest,
)

GOOD = """\
# the fleet's limits
resource_policy:
  max_swarms_per_task: 2
  max_cost_per_task: "2.50"
  min_capability_match: 0.8
  circuit_breaker_failure_threshold: 5
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigurationError) as info:
        parse_policy(text, "policy.yaml")
    message = str(info.value)
    assert "pydantic" not in message and "errors.pydantic.dev" not in message and "Traceback" not in message
    return message


# -- policy: good --------------------------------------------------------------------------


def test_good_policy_parses_exactly() -> None:
    policy = parse_policy(GOOD, "policy.yaml")
    assert policy == ResourcePolicy(max_swarms_per_task=2, max_cost_per_task_micros=2_500_000,
                                    min_capability_match=Decimal("0.8"), circuit_breaker_failure_threshold=5)


@pytest.mark.parametrize(("written", "micros"), [
    ("2.50", 2_500_000), ('"2.50"', 2_500_000), ("'$3'", 3 * MICROS), ("10", 10 * MICROS),
    ("0.000001", 1), ("1_000.5", 1_000_500_000), ("0.1", 100_000),
])
def test_dollars_are_read_from_the_text_never_a_float(written: str, micros: int) -> None:
    policy = parse_policy(f"resource_policy:\n  max_cost_per_task: {written}\n", "p.yaml")
    assert policy.max_cost_per_task_micros == micros


def test_missing_keys_keep_their_defaults_and_empty_mapping_is_all_defaults() -> None:
    assert parse_policy("resource_policy: {}\n") == ResourcePolicy()
    partial = parse_policy("resource_policy:\n  min_capability_match: 1\n")
    assert partial.min_capability_match == Decimal("1") and partial.max_swarms_per_task == 3


def test_dump_reads_back_unchanged() -> None:
    policy = parse_policy(GOOD, "policy.yaml")
    assert parse_policy(dump_policy(policy), "dumped") == policy
    hooked = parse_policy(GOOD + "  escalation_webhook: https://ops.example/hooks/if?x=1\n", "p.yaml")
    assert hooked.escalation_webhook == "https://ops.example/hooks/if?x=1"
    assert parse_policy(dump_policy(hooked), "dumped") == hooked
    assert parse_policy("resource_policy:\n  escalation_webhook:\n").escalation_webhook is None
    assert policy_as_dict(policy)["max_cost_per_task"] == "2.50"
    assert plain_usd(1) == "0.000001" and plain_usd(-2_500_000) == "-2.50" and plain_usd(0) == "0.00"


def test_load_policy_from_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    assert load_policy(path).max_swarms_per_task == 2


# -- policy: bad, each naming the key and the line --------------------------------------------


def test_unknown_key_names_key_and_line() -> None:
    message = error_of("resource_policy:\n  max_swarms_per_task: 2\n  max_swarms: 4\n")
    assert "policy.yaml:3:" in message and "resource_policy.max_swarms" in message
    assert "unknown key" in message


@pytest.mark.parametrize(("line", "key", "says"), [
    ("max_swarms_per_task: two", "max_swarms_per_task", "must be an integer, got a string"),
    ("max_swarms_per_task: 2.0", "max_swarms_per_task", "must be an integer, got a number"),
    ("circuit_breaker_failure_threshold: yes", "circuit_breaker_failure_threshold", "got a boolean"),
    ("min_capability_match: '0.7'", "min_capability_match", "must be a number from 0 to 1, got a string"),
    ("min_capability_match: [0.7]", "min_capability_match", "got a list"),
    ("max_cost_per_task: {usd: 3}", "max_cost_per_task", "got a mapping"),
    ("max_cost_per_task: lots", "max_cost_per_task", "'lots' is not a number of dollars"),
    ("max_cost_per_task: 0.0000001", "max_cost_per_task", "more than 6 decimals"),
    ("max_cost_per_task:", "max_cost_per_task", "empty (null)"),
    ("escalation_webhook: 3", "escalation_webhook", "must be an http(s) URL, got an integer"),
    ("escalation_webhook: ftp://x/y", "escalation_webhook", "must be an http:// or https:// URL"),
    ("escalation_webhook: [http://a]", "escalation_webhook", "got a list"),
])
def test_wrong_type_names_key_and_line(line: str, key: str, says: str) -> None:
    message = error_of(f"resource_policy:\n  # limits\n  {line}\n")
    assert f"policy.yaml:3: resource_policy.{key}: " in message
    assert says in message


@pytest.mark.parametrize(("line", "key", "says"), [
    ("max_swarms_per_task: 0", "max_swarms_per_task", "must be at least 1, got 0"),
    ("max_swarms_per_task: 101", "max_swarms_per_task", "must be at most 100"),
    ("min_capability_match: 1.5", "min_capability_match", "must be at most 1, got 1.5"),
    ("min_capability_match: -0.1", "min_capability_match", "must be at least 0"),
    ("max_cost_per_task: 0", "max_cost_per_task", "must be more than $0.00, got $0.00"),
    ("max_cost_per_task: '-3'", "max_cost_per_task", "got -$3.00"),
    ("circuit_breaker_failure_threshold: 0", "circuit_breaker_failure_threshold", "must be at least 1"),
    ("min_capability_match: .nan", "min_capability_match", "not a finite number"),
])
def test_out_of_range_names_key_and_line(line: str, key: str, says: str) -> None:
    message = error_of(f"# comment\nresource_policy:\n\n  {line}\n")
    assert f"policy.yaml:4: resource_policy.{key}: " in message
    assert says in message


def test_every_problem_is_reported_in_line_order() -> None:
    message = error_of("resource_policy:\n  min_capability_match: 3\n  colour: red\n"
                       "  max_swarms_per_task: x\n  min_capability_match: 0.5\n")
    found = [int(n) for n in re.findall(r"policy\.yaml:(\d+):", message)]
    assert found == [2, 3, 4, 5] and "4 problems" in message
    assert "repeated (first on line 2)" in message


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty policy file"),
    ("resource_polcy:\n  max_swarms_per_task: 2\n", "policy.yaml:1: unknown top-level key 'resource_polcy'"),
    ("- 1\n- 2\n", "policy.yaml:1: expected a top-level 'resource_policy:' mapping, got a list"),
    ("resource_policy:\n", "'resource_policy' is empty"),
    ("resource_policy: 3\n", "'resource_policy' must be a mapping, got an integer"),
    ("resource_policy:\n  max_swarms_per_task: [1,\n", "policy.yaml:3: invalid YAML"),
    ("resource_policy:\n  a: 1\n b: 2\n", "policy.yaml:3: invalid YAML"),
])
def test_malformed_documents_name_the_line(text: str, says: str) -> None:
    assert says in error_of(text)


def test_unreadable_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"nope\.yaml: no such policy file"):
        load_policy(tmp_path / "nope.yaml")
    with pytest.raises(ConfigurationError, match="is a directory"):
        load_policy(tmp_path)
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes(b"resource_policy:\n  # caf\xe9\n")
    with pytest.raises(ConfigurationError, match=r"latin1\.yaml:2: not UTF-8"):
        load_policy(binary)
    bad = tmp_path / "bad.yaml"
    bad.write_text("resource_policy:\n  max_swarms_per_task: many\n")
    with pytest.raises(ConfigurationError, match=r"bad\.yaml:2: resource_policy\.max_swarms_per_task"):
        load_policy(bad)


# -- capability manifests -------------------------------------------------------------------------

MANIFEST: dict[str, Any] = {"id": "session-4-sip",
                            "capabilities": ["integration:sip", "code-analysis:python"],
                            "cost_per_hour": "2.00", "reputation": 0.9, "model": "haiku", "budget": 10}


def test_valid_manifest_gives_a_profile_with_exact_money() -> None:
    profile = validate_manifest(MANIFEST)
    assert profile == SwarmProfile(id="session-4-sip",
                                   capabilities=["code-analysis:python", "integration:sip"],
                                   cost_per_hour_micros=2 * MICROS, reputation=Decimal("0.9"), model="haiku")
    parsed = parse_manifest({**MANIFEST, "capabilities": ["acme:widgets"], "cost_per_hour": 0.1})
    assert parsed.cost_per_hour == 100_000 and parsed.budget_micros == 10 * MICROS
    assert parsed.custom_capabilities == ["acme:widgets"]
    minimal = parse_manifest({"id": "a", "capabilities": ["docs:markdown"], "cost_per_hour": 1})
    assert minimal.budget_micros is None and minimal.reputation == 1


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"id": None}, "id", "required field is missing"),
    ({"id": "has space"}, "id", "must be letters, digits"),
    ({"capabilities": []}, "capabilities", "at least one capability"),
    ({"capabilities": ["Python"]}, "capabilities",
     "neither a built-in capability nor a custom 'domain:skill'"),
    ({"capabilities": ["python"]}, "capabilities", "'python'"),
    ({"capabilities": ["docs:markdown", "docs:markdown"]}, "capabilities", "listed more than once"),
    ({"capabilities": "docs:markdown"}, "capabilities", "valid list"),
    ({"cost_per_hour": None}, "cost_per_hour", "required field is missing"),
    ({"cost_per_hour": 0}, "cost_per_hour", "must be more than $0.00"),
    ({"cost_per_hour": "cheap"}, "cost_per_hour", "not a number of dollars"),
    ({"cost_per_hour": True}, "cost_per_hour", "got bool"),
    ({"reputation": 1.5}, "reputation", "must be at most 1, got 1.5"),
    ({"reputation": "great"}, "reputation", "must be a number from 0 to 1"),
    ({"budget": "-1"}, "budget", "must be at least $0.00, got -$1.00"),
    ({"model": ""}, "model", "at least 1 character"),
    ({"swarm_id": "x"}, "swarm_id", "unknown field"),
])
def test_invalid_manifest_names_field_and_reason(change: dict[str, Any], field: str, says: str) -> None:
    data = {**MANIFEST, **change}
    data = {k: v for k, v in data.items() if v is not None or k in ("budget", "model")}
    with pytest.raises(ConfigurationError) as info:
        validate_manifest(data, "m.json")
    message = str(info.value)
    assert message.startswith("m.json: invalid capability manifest")
    assert f"{field}: " in message and says in message
    assert "errors.pydantic.dev" not in message


def test_manifest_must_be_an_object() -> None:
    with pytest.raises(ConfigurationError, match="must be an object"):
        validate_manifest([MANIFEST])


def test_manifest_files_json_and_yaml(tmp_path: Path) -> None:
    as_json = tmp_path / "m.json"
    as_json.write_text(json.dumps({**MANIFEST, "cost_per_hour": 2.25}))
    assert load_manifest(as_json).cost_per_hour == 2_250_000
    as_yaml = tmp_path / "m.yaml"
    as_yaml.write_text("id: y\ncapabilities: [docs:markdown]\ncost_per_hour: '1.50'\n")
    assert load_manifest(as_yaml).to_profile().cost_per_hour_micros == 1_500_000
    broken = tmp_path / "broken.json"
    broken.write_text('{"id": "x",\n "capabilities": }')
    with pytest.raises(ConfigurationError, match=r"broken\.json:2: invalid JSON"):
        load_manifest(broken)
    with pytest.raises(ConfigurationError, match=r"missing\.json: no such manifest file"):
        load_manifest(tmp_path / "missing.json")


def test_schema_is_json_schema_of_the_same_rules() -> None:
    schema = CAPABILITY_MANIFEST_SCHEMA
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(schema["required"]) == {"id", "capabilities", "cost_per_hour"}
    props = schema["properties"]
    assert set(props) == {"id", "capabilities", "cost_per_hour", "reputation", "model", "budget"}
    items = props["capabilities"]["items"]["anyOf"]
    assert "integration:sip" in items[0]["enum"] and re.match(items[1]["pattern"], "acme:widgets")
    assert not re.match(items[1]["pattern"], "Python")
    dollar_forms = [f for f in props["cost_per_hour"]["anyOf"] if f["type"] == "string"]
    pattern = dollar_forms[0]["pattern"]
    assert re.match(pattern, "2.50") and not re.match(pattern, "2.5000001")
    json.dumps(schema)  # serialisable as-is
