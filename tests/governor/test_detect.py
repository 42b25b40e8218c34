"""Capability detection for `ifctl swarm spawn`."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrafabric.errors import ConfigurationError
from infrafabric.governor.detect import detect_capabilities


def test_detects_languages_tools_and_tests(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "main.rs").write_text("fn main() {}\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    (tmp_path / "README.md").write_text("# x\n")
    (tmp_path / "node_modules" / "dep").mkdir(parents=True)
    (tmp_path / "node_modules" / "dep" / "index.js").write_text("")  # skipped
    found = detect_capabilities(tmp_path)
    assert set(found) == {"code-analysis:python", "code-analysis:rust", "testing:integration",
                          "docs:markdown", "docs:technical-writing"}
    assert found["code-analysis:rust"] == "svc/main.rs"


def test_this_repository_is_python_with_tests_and_docs() -> None:
    found = detect_capabilities(Path(__file__).parents[2])
    assert {"code-analysis:python", "testing:integration", "docs:markdown"} <= set(found)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a directory"):
        detect_capabilities(tmp_path / "nope")
