"""Property tests: every parser of outside input, fed anything, either accepts
it or raises InfraFabric's own error (a message and an exit code), never
anything else: no TypeError, no RecursionError, no int-digit ValueError."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrafabric.bus.bounds import parse_dollars
from infrafabric.bus.url import parse_url
from infrafabric.chassis.models import parse_contract
from infrafabric.cli.board import parse_result
from infrafabric.cli.chassis_bus import load_contract_file
from infrafabric.cli.common import parse_time
from infrafabric.coordinator.board import parse_board
from infrafabric.errors import ConfigurationError, InfraFabricError
from infrafabric.governor.policy import parse_policy
from infrafabric.governor.schema import load_manifest, parse_manifest
from infrafabric.witness.checkpoint import Checkpoint, Verifier
from infrafabric.witness.log import decode_block

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: JSON-shaped data: scalars of every awkward kind, nested
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40),
                    st.sampled_from(["9" * 5000, "1e999999999", "nan", "\x1b[2J", "", " "]),
                    # built lazily: hypothesis cannot repr a 5000-digit int in a strategy
                    st.integers(4000, 5000).map(lambda n: 10**n))
data = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=12), kids, max_size=4), max_leaves=20)
#: text that looks a little like what the parsers expect, and text that does not
texts = st.one_of(st.text(max_size=200), st.sampled_from([
    "- " * 3000,  # deep flow nesting costs a second a parse: test_the_deepest_documents has it
    "| ID | Task |\n|---|---|\n| A | a |\n", "version: 1\ntasks: []\ntasks: []\n",
    "resource_policy:\n  max_cost_per_task: 1e999999999\n", "\ufeff\x00\xff",
]))


def encoded(dump: Callable[[], str]) -> str | None:
    """A document's text, or None when it has none: neither JSON nor YAML can
    write an int past Python's 4,300-digit limit, so no file holds one."""
    try:
        return dump()
    except ValueError:
        return None


def only_our_errors(call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Call; a refusal of ours is the expected answer, anything else fails the test."""
    with contextlib.suppress(InfraFabricError):
        call(*args, **kwargs)


@SETTINGS
@given(text=texts, fmt=st.sampled_from(["md", "yaml", "json"]))
def test_boards_in_every_format(text: str, fmt: str) -> None:
    only_our_errors(parse_board, text, "b." + fmt, fmt)


@SETTINGS
@given(doc=data)
def test_structured_boards_from_any_data(doc: Any) -> None:
    for text, fmt in ((encoded(lambda: json.dumps(doc, default=str)), "json"),
                      (encoded(lambda: yaml.safe_dump(doc, default_flow_style=True)), "yaml")):
        if text is not None:
            only_our_errors(parse_board, text, "b." + fmt, fmt)


@SETTINGS
@given(text=texts, doc=data)
def test_policies(text: str, doc: Any) -> None:
    only_our_errors(parse_policy, text, "p.yaml")
    policy = encoded(lambda: yaml.safe_dump({"resource_policy": doc}))
    if policy is not None:
        only_our_errors(parse_policy, policy, "p.yaml")


@SETTINGS
@given(doc=data)
def test_manifests_and_contracts(doc: Any) -> None:
    only_our_errors(parse_manifest, doc, "m.json")
    only_our_errors(parse_contract, doc, source="c.yaml")
    if isinstance(doc, dict):
        only_our_errors(parse_manifest, {"id": "s", "capabilities": ["docs:markdown"], **doc}, "m.json")
        only_our_errors(parse_contract, {"swarm_id": "s", **doc}, source="c.yaml")


@SETTINGS
@given(value=st.one_of(st.text(max_size=60), st.integers(), st.decimals(), scalars))
def test_money_and_time_arguments(value: Any) -> None:
    only_our_errors(parse_dollars, value, what="--budget")
    if isinstance(value, str):
        only_our_errors(parse_time, value, "--since", 1_700_000_000.0)


@SETTINGS
@given(text=st.one_of(st.text(max_size=80), st.from_regex(
    r"(nats|etcd|memory|http)://[a-z0-9.:@,\[\]%-]{0,30}(\?[a-z_=&0-9.%-]{0,30})?", fullmatch=True)))
def test_bus_urls(text: str) -> None:
    only_our_errors(parse_url, text)


@SETTINGS
@given(text=texts, blob=st.binary(max_size=200), doc=data)
def test_witness_records(text: str, blob: bytes, doc: Any) -> None:
    only_our_errors(Checkpoint.parse, text, source="witness/cp/1")
    only_our_errors(Verifier.parse, text, source="witness/keys/1")
    for raw in (blob, text.encode(), (encoded(lambda: json.dumps(doc, default=str)) or "").encode()):
        # what verify calls: a ValueError is its "not a valid block" (TAMPERED)
        with contextlib.suppress(ValueError, TypeError):
            decode_block(raw)


@pytest.mark.parametrize("nested", ["[" * 200_000 + "]" * 200_000, "{\"a\":" * 100_000 + "1" + "}" * 100_000])
def test_the_deepest_documents(nested: str) -> None:
    for call in (lambda: parse_board(nested, "b.json", "json"), lambda: parse_policy(nested, "p.yaml"),
                 lambda: parse_board(nested, "b.yaml", "yaml")):
        only_our_errors(call)
    with pytest.raises(ValueError, match="nested too deeply"):
        decode_block(nested.encode())
    assert parse_result(nested) == nested  # --result keeps what is not usable JSON as text


@pytest.mark.parametrize("name", ["m.yaml", "m.json"])
@pytest.mark.parametrize("body", ["a: " + "9" * 5000, "[" * 5000 + "]" * 5000, '{"a": ' + "9" * 5000 + "}"])
def test_manifest_and_contract_files_past_the_parsers_limits(tmp_path: Path, name: str, body: str) -> None:
    """YAML and JSON both refuse an int past 4,300 digits with a bare ValueError
    and a deep document with RecursionError: a file with either is a refusal."""
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(ConfigurationError, match=name):
        load_manifest(path)
    with pytest.raises(ConfigurationError, match=name):
        load_contract_file(path)
