"""Detect a swarm's capabilities from its code (for ``ifctl swarm spawn``).

The rules, checked against file names below the directory (``.git``,
``node_modules``, virtualenvs and build output are skipped; at most
``max_files`` files are looked at):

============================================  ==============================================
found                                         capability
============================================  ==============================================
``pyproject.toml``, ``setup.py``, ``*.py``    ``code-analysis:python``
``package.json``, ``*.js``, ``*.ts``          ``code-analysis:javascript``
``Cargo.toml``, ``*.rs``                      ``code-analysis:rust``
``go.mod``, ``*.go``                          ``code-analysis:go``
``Chart.yaml``, ``kustomization.yaml``        ``infra:kubernetes``
``*.wat``, ``*.wasm``                         ``wasm:runtime``
``*.md``, ``*.rst``                           ``docs:markdown``, ``docs:technical-writing``
``tests/``/``test_*.py``/``*_test.go``        ``testing:integration``
``*.proto``                                   ``architecture:design``
============================================  ==============================================
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from infrafabric.errors import ConfigurationError

__all__ = ["RULES", "detect_capabilities"]

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("code-analysis:python", ("pyproject.toml", "setup.py", "setup.cfg", "*.py")),
    ("code-analysis:javascript", ("package.json", "*.js", "*.mjs", "*.ts", "*.tsx")),
    ("code-analysis:rust", ("Cargo.toml", "*.rs")),
    ("code-analysis:go", ("go.mod", "*.go")),
    ("infra:kubernetes", ("Chart.yaml", "kustomization.yaml", "kustomization.yml")),
    ("wasm:runtime", ("*.wat", "*.wasm")),
    ("docs:markdown", ("*.md", "*.rst")),
    # the seeds' name for writing docs, which board import infers for documentation tasks
    ("docs:technical-writing", ("*.md", "*.rst")),
    ("testing:integration", ("test_*.py", "*_test.py", "*_test.go", "*.test.js", "*.spec.ts",
                             "conftest.py")),
    ("architecture:design", ("*.proto",)),
)
SKIP_DIRS = frozenset({".git", ".hg", "node_modules", ".venv", "venv", "__pycache__", "target",
                       "dist", "build", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".infrafabric"})


def detect_capabilities(path: str | os.PathLike[str], *, max_files: int = 20_000) -> dict[str, str]:
    """Capability -> the first file (relative path) that showed it."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigurationError(f"{root}: not a directory")
    found: dict[str, str] = {}
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        rel_dir = Path(dirpath).relative_to(root)
        if "tests" in rel_dir.parts and "testing:integration" not in found:
            found["testing:integration"] = str(rel_dir)
        for name in sorted(filenames):
            seen += 1
            if seen > max_files:
                return found
            for capability, patterns in RULES:
                if capability not in found and any(fnmatch.fnmatch(name, p) for p in patterns):
                    found[capability] = str(rel_dir / name)
    return found
