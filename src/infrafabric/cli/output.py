"""Tables for people on a terminal, plain tab-separated columns everywhere else.

On a terminal a rich table fits itself to the window: it folds or ellipsizes
cells. Output that is not a terminal (a pipe, a file) is never cut: the same
table is printed as TSV, one header line and one line per row, the cells
separated by tabs, with no markup, no ellipsis and no wrapping, so
``ifctl board show | cut -f1`` gives every task id whole. ``--json`` stays the
machine format; this is for ``grep``, ``cut``, ``awk`` and ``sort``.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from infrafabric.cli.app import terminal_safe

# rich is imported when a table is printed, not when a command module imports this one
if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

__all__ = ["print_table", "table_rows"]


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` on ``console``: the rich table when the console is a
    terminal, else its header and rows as tab-separated lines (:func:`table_rows`;
    the table's title is left out, so every line is a row)."""
    if console.is_terminal:
        console.print(table)
        return
    # straight to the file: console.print would expand the tabs into spaces
    console.file.write("".join("\t".join(row) + "\n" for row in table_rows(table)))
    console.file.flush()


def table_rows(table: Table) -> list[list[str]]:
    """The header (a multi-line column title joined with spaces) and every row of
    ``table`` as plain text: markup and styles dropped, control characters
    escaped (:func:`~infrafabric.cli.app.terminal_safe`), a tab or newline in a
    cell shown as ``\\t`` or ``\\n``, so each row is one line of equally many cells."""
    header = [" ".join(part.strip() for part in _plain(c.header).split("\n") if part.strip())
              for c in table.columns]
    columns = [[_cell(cell) for cell in c.cells] for c in table.columns]
    return [header, *(list(row) for row in zip(*columns, strict=True))]


def _cell(renderable: RenderableType) -> str:
    return _plain(renderable).replace("\t", "\\t").replace("\n", "\\n")


def _plain(renderable: RenderableType) -> str:
    """The text of a cell without markup or styles, control characters escaped."""
    from rich.console import Console
    from rich.errors import MarkupError
    from rich.text import Text

    if isinstance(renderable, Text):
        text = renderable.plain
    elif isinstance(renderable, str):
        try:
            text = Text.from_markup(renderable, emoji=False).plain
        except MarkupError:  # not markup after all: the text as it is
            text = renderable
    else:  # another renderable: as it prints, unstyled, on one unbounded line
        sink = io.StringIO()
        Console(file=sink, width=1_000_000, color_system=None, soft_wrap=True, highlight=False,
                emoji=False).print(renderable, end="")
        text = sink.getvalue()
    return terminal_safe(text)
