"""Output that is not a terminal is never cut: a table becomes tab-separated
plain columns (``infrafabric.cli.output``), ``--json`` stays the machine format.

Click's runner and a subprocess with stdout on a pipe are not terminals, so a
table there is TSV at any ``COLUMNS``; with ``TTY_COMPATIBLE=1`` rich takes the
output for a terminal and draws the table as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.table import Table
from rich.text import Text

from infrafabric.cli import cli
from infrafabric.cli.output import table_rows
from support import IFCTL

#: the id the measured bug cut to "P0…" at 80 columns, and one of 68 characters
LONG_ID = "P0.1.10-" + "extract-the-coordinator-lease-renewal-into-its-own-module" + "-x"
TITLE = "A title much longer than the thirty-six columns a terminal table gives it, [/b] and all"
BOARD_HEADER = ["id", "status", "kind", "owner", "lease", "title", "depends on"]


def invoke(bus: str, home: Path, *args: str, **env: str) -> Result:
    result = CliRunner().invoke(cli, list(args), env={"IF_BUS_URL": bus, "IF_HOME": str(home),
                                                      "COLUMNS": "80", **env})
    assert result.exit_code == 0, (args, result.output, result.stderr)
    return result


def tsv(stdout: str, header: list[str]) -> list[list[str]]:
    """The rows of the table in ``stdout``: the lines after the header line with as
    many tab-separated cells as it has (every line with a tab is held to that)."""
    lines = stdout.splitlines()
    start = lines.index("\t".join(header))
    rows = [line.split("\t") for line in lines[start + 1:] if "\t" in line]
    for row in rows:
        assert len(row) == len(header), (row, header)
    assert "…" not in stdout and "\x1b" not in stdout  # no ellipsis, no styles
    return rows


@pytest.fixture
def bus() -> str:
    return f"memory://output-{uuid.uuid4().hex[:12]}"


def test_board_show_piped_keeps_every_id_and_title_whole(bus: str, tmp_path: Path) -> None:
    assert len(LONG_ID) > 60
    for task_id, deps in (("P0.1.2", ()), ("P0.1.10", ("P0.1.2",)), (LONG_ID, ("P0.1.10", "P0.1.2"))):
        invoke(bus, tmp_path, "task", "create", task_id, "--title", TITLE,
               *(arg for dep in deps for arg in ("--dep", dep)))
    out = invoke(bus, tmp_path, "board", "show").stdout
    assert out.splitlines()[0] == "\t".join(BOARD_HEADER)  # no title line above the header
    rows = tsv(out, BOARD_HEADER)
    assert [row[0] for row in rows] == ["P0.1.2", "P0.1.10", LONG_ID]
    by_id = {row[0]: dict(zip(BOARD_HEADER, row, strict=True)) for row in rows}
    assert {row["title"] for row in by_id.values()} == {TITLE}  # markup-like text as it is
    assert by_id[LONG_ID]["depends on"] == "P0.1.10, P0.1.2"
    assert by_id["P0.1.2"]["status"] == "available" and by_id[LONG_ID]["status"] == "blocked"
    assert out.splitlines()[-1] == "1 available, 2 blocked"  # the summary line is still there
    # --json is unchanged: the machine format
    data = json.loads(invoke(bus, tmp_path, "board", "show", "--json").stdout)
    assert [t["id"] for t in data["tasks"]] == ["P0.1.2", "P0.1.10", LONG_ID]


def test_board_show_on_a_terminal_is_still_a_rich_table(bus: str, tmp_path: Path) -> None:
    invoke(bus, tmp_path, "task", "create", LONG_ID, "--title", TITLE)
    out = invoke(bus, tmp_path, "board", "show", TTY_COMPATIBLE="1", NO_COLOR="1").stdout
    assert "\t" not in out and "┃" in out and "1 tasks" in out
    assert "…" in out  # it fits the 80-column window, as before


def test_governor_status_piped_keeps_every_swarm_whole(bus: str, tmp_path: Path) -> None:
    swarms = ["session-with-a-long-swarm-identifier-for-the-fleet-0001", "s2"]
    for swarm in swarms:
        invoke(bus, tmp_path, "governor", "register", swarm, "--cap", "code-analysis:python",
               "--cap", "docs:markdown", "--cost-per-hour", "2", "--budget", "10",
               "--model", "[/m] a-model-with-a-long-name")
    out = invoke(bus, tmp_path, "governor", "status").stdout
    header = ["swarm", "live", "capabilities", "$/h", "rep", "model", "budget left", "breaker"]
    rows = tsv(out, header)
    assert sorted(row[0] for row in rows) == sorted(swarms)
    for row in rows:
        assert row[2] == "code-analysis:python, docs:markdown"
        assert row[5] == "[/m] a-model-with-a-long-name"
        assert row[6] == "$10.00 / $10.00"


def test_bench_waste_on_a_pipe_is_tsv(tmp_path: Path) -> None:
    """A real pipe: ``ifctl bench waste | ...`` as a subprocess, a narrow COLUMNS."""
    env = {k: v for k, v in os.environ.items() if k not in ("IF_BUS_URL", "TTY_COMPATIBLE", "FORCE_COLOR")}
    done = subprocess.run([IFCTL, "bench", "waste", "--tasks", "20"], capture_output=True, text=True,
                          timeout=120, env={**env, "COLUMNS": "40", "IF_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    header = ["strategy", "total spend", "wasted spend", "waste %", "tasks done", "attempts",
              "attempts /task", "unqualified attempts"]
    rows = tsv(done.stdout, header)
    assert [row[0] for row in rows] == ["random", "governor", "floor"]
    assert all(row[4].endswith("/20") for row in rows)


def test_table_rows_are_plain_one_line_cells() -> None:
    table = Table(title="ignored")
    table.add_column("operation\n(ms)")
    table.add_column(Text("styled", style="bold"))
    table.add_column("\nside")
    table.add_row("[yellow]1.5[/yellow]", Text("a\tb\nc", style="red"), "esc\x1b[31m \\[x] :smile:")
    table.add_row("[/not markup", "", "-")
    assert table_rows(table) == [
        ["operation (ms)", "styled", "side"],
        ["1.5", "a\\tb\\nc", "esc\\x1b[31m [x] :smile:"],
        ["[/not markup", "", "-"],
    ]
