"""Capabilities inferred for tasks that list none (pure: no bus)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrafabric.coordinator.board import load_board
from infrafabric.coordinator.infer import (
    CapabilityMap,
    apply_inference,
    extract_required_capabilities,
    infer_capabilities,
    load_capability_map,
    parse_capability_map,
)
from infrafabric.coordinator.models import TaskKind, TaskSpec
from infrafabric.errors import ConfigurationError

SEED = Path(__file__).parents[2] / "src/infrafabric/coordinator/data/phase0-board.md"


def caps(spec: TaskSpec, mapping: CapabilityMap | None = None) -> list[str]:
    return [i.capability for i in infer_capabilities(spec, mapping or CapabilityMap())]


def test_what_a_task_is_about_and_what_it_produces_with_their_rules() -> None:
    """At most two: the section (else the title's, else the description's
    keywords) says what it is about; the first path rule, languages first,
    what it produces."""
    spec = TaskSpec(id="T1", title="Harden the sandbox", description="etcd leases for it",
                    deliverable="`src/runtime.rs` (limits)", paths=["tests/test_x.py", "docs/guide.md",
                                                                    "deploy/Dockerfile", "web/app.ts"],
                    section="IF.chassis Tasks")
    found = {i.capability: i for i in infer_capabilities(spec)}
    assert sorted(found) == ["code-analysis:python", "wasm:runtime"]
    assert found["wasm:runtime"].rule == "section contains 'IF.chassis'"
    assert found["code-analysis:python"].rule == "path *.py"  # python is the first path rule
    assert found["code-analysis:python"].evidence == "path tests/test_x.py"
    assert "wasm:runtime (section contains 'IF.chassis'" in str(found["wasm:runtime"])
    rust = TaskSpec(id="T2", title="Harden the sandbox", description="etcd leases",
                    deliverable="`src/runtime.rs` (limits)")
    found = {i.capability: i for i in infer_capabilities(rust)}
    assert sorted(found) == ["code-analysis:rust", "wasm:runtime"]  # no section: the title's keyword
    assert found["wasm:runtime"].rule == "keyword 'sandbox'" and found["wasm:runtime"].evidence == "title"
    assert found["code-analysis:rust"].evidence == "deliverable src/runtime.rs"
    vague = TaskSpec(id="T3", title="Tidy up", description="the etcd leases")
    assert [str(i) for i in infer_capabilities(vague)] == [
        "infra:distributed-systems (keyword 'etcd', 'leases': description)"]


def test_whole_words_only_and_deterministic() -> None:
    spec = TaskSpec(id="T", title="Casual testament of nodes", description="scipy and sipping")
    assert caps(spec) == []
    twice = TaskSpec(id="T", title="Write the SIP runbook", description="", deliverable="docs/sip.md")
    assert caps(twice) == caps(twice) == ["docs:technical-writing", "integration:sip"]


def test_tasks_with_capabilities_are_never_changed_and_order_is_kept() -> None:
    given = TaskSpec(id="A", title="etcd work", capabilities=["python"])
    bare = TaskSpec(id="B", title="etcd work")
    none = TaskSpec(id="C", title="Something vague")
    tasks, reasons = apply_inference([given, bare, none])
    assert [t.id for t in tasks] == ["A", "B", "C"]
    assert tasks[0] is given and tasks[0].capabilities == ["python"]
    assert tasks[1].capabilities == ["infra:distributed-systems"] and tasks[2].capabilities == []
    assert set(reasons) == {"B"} and reasons["B"][0].rule == "keyword 'etcd'"


def test_the_capability_map_overrides_adds_rules_and_switches_off(tmp_path: Path) -> None:
    path = tmp_path / "caps.yaml"
    path.write_text("tasks:\n  B: [docs:markdown, python]\n"
                    "keywords:\n  - {capability: integration:sip, words: [pbx]}\n"
                    "paths:\n  - {capability: infra:terraform, patterns: ['*.tf', 'infra/']}\n"
                    "sections:\n  - {capability: infra:networking, contains: [Plumbing]}\n")
    mapping = load_capability_map(path)
    b = TaskSpec(id="B", title="etcd work")
    c = TaskSpec(id="C", title="The PBX", paths=["infra/main.tf"], section="Plumbing Tasks")
    assert caps(b, mapping) == ["docs:markdown", "python"]
    assert infer_capabilities(b, mapping)[0].rule == "capability map"
    assert caps(c, mapping) == ["infra:networking", "infra:terraform"]  # the section, then the path
    assert caps(TaskSpec(id="F", title="The PBX"), mapping) == ["integration:sip"]
    only = parse_capability_map("builtin: false\nkeywords:\n  - {capability: x:y, words: [pbx]}\n", "m.yaml")
    assert caps(TaskSpec(id="D", title="etcd PBX"), only) == ["x:y"]
    off = parse_capability_map("infer: false\ntasks: {B: [python]}\n", "off.yaml")
    assert caps(TaskSpec(id="E", title="etcd"), off) == [] and caps(b, off) == ["python"]
    given = TaskSpec(id="B", title="x", capabilities=["go"])
    assert any("never changed" in w for w in mapping.warnings([given]))
    assert any("not on the board" in w for w in mapping.warnings([]))


@pytest.mark.parametrize(("text", "says"), [
    ("tasks: [a]\n", "bad.yaml:1: tasks must map task ids"),
    ("infer: maybe\n", "bad.yaml:1: infer must be true or false"),
    ("tasks:\n  A: [Python]\n", "bad.yaml:2: tasks: A: 'Python' is not a capability"),
    ("keywords:\n  - {capability: sip}\n", "bad.yaml:2: keywords: a rule needs both"),
    ("colour: red\n", "bad.yaml:1: unknown key 'colour'"),
    ("tasks: {A: [x]\n", "bad.yaml:2: not valid YAML"),
    ("a: &x 1\nb: *x\n", "anchors and aliases"),
    ("- just\n- a list\n", "bad.yaml:1: the top level must be a mapping"),
])
def test_a_bad_map_names_file_line_and_problem(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as err:
        load_capability_map(path)
    assert says in err.value.message and str(path) in err.value.message
    assert err.value.exit_code == 2


def test_blocker_messages_give_the_capabilities_they_need() -> None:
    found = extract_required_capabilities("etcd is down and src/lib.rs will not build in the sandbox")
    assert [f.capability for f in found] == ["code-analysis:rust", "infra:distributed-systems",
                                             "wasm:runtime"]
    assert found[1].rule == "keyword 'etcd'" and found[0].evidence == "message names src/lib.rs"
    assert extract_required_capabilities("needs P0.1.1") == []


def test_every_critical_task_of_the_phase0_board_gets_sensible_capabilities() -> None:
    board = load_board(SEED)
    tasks, reasons = apply_inference(board.tasks)
    by_id = {t.id: set(t.capabilities) for t in tasks}
    for t in tasks:
        if t.kind is TaskKind.CRITICAL:
            assert 1 <= len(t.capabilities) <= 2, t.id  # two at most: a 70 % match stays reachable
    assert by_id["P0.1.1"] == {"code-analysis:python", "infra:distributed-systems"}
    assert by_id["P0.1.5"] == {"code-analysis:python", "infra:distributed-systems"}
    assert by_id["P0.2.1"] == {"code-analysis:python", "governance:policy"}
    assert by_id["P0.3.1"] == {"code-analysis:python", "wasm:runtime"}
    assert by_id["P0.4.1"] == {"cli:design", "code-analysis:python"}
    assert by_id["P0.5.5"] == {"docs:technical-writing"}
    assert by_id["F3.1"] == {"docs:technical-writing", "integration:h323"} and by_id["F2.2"] == {
        "integration:webrtc"}
    assert [str(i) for i in reasons["P0.1.1"]] == [
        "code-analysis:python (path *.py: deliverable /home/user/infrafabric/infrafabric/event_bus.py)",
        "infra:distributed-systems (section contains 'IF.coordinator': section "
        f"{board.get('P0.1.1').section!r})"]


def test_the_seeds_sessions_qualify_for_every_task_of_the_seed_board() -> None:
    """Inferred capabilities must not leave work nobody may take: the seeds'
    sessions (the demo's fleet) cover every task at the policy's 70 %."""
    from infrafabric.coordinator import coverage
    from infrafabric.demo.run import SESSIONS

    tasks, _ = apply_inference(load_board(SEED).tasks)
    for t in tasks:
        assert max(coverage(t.capabilities, offered) for _, offered, *_ in SESSIONS) >= 0.7, t.id
