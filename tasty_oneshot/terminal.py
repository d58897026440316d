"""Text from outside (a reason, an output, a row from another host) on its way to a terminal:
control characters written as escapes, so that no escape sequence reaches the terminal and
no line break splits a line that must stay one."""

import sys
from collections.abc import Sequence

# Control characters (C0, DEL, C1) and the line and paragraph separators, as Python escapes:
# with them go every line break str.splitlines() knows and a terminal's escape sequences.
_UNPRINTABLE = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}
_ONE_LINE = {c: text for c, text in _UNPRINTABLE.items() if c != ord("\t")}
_LINES = {c: text for c, text in _ONE_LINE.items() if c != ord("\n")}


def one_line(text: str) -> str:
    """`text` as one line, tabs kept (a log line, a table cell)."""
    return text.translate(_ONE_LINE)


def lines(text: str) -> str:
    """`text` with its line breaks and tabs kept, every other control character escaped (an
    agent's output on stdout)."""
    return text.replace("\r\n", "\n").translate(_LINES)


def write_table(rows: Sequence[Sequence[str]]) -> None:
    """Rows as aligned columns on stdout, every cell one line without control characters."""
    cells = [[one_line(cell).replace("\t", " ") for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        padded = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        sys.stdout.write("  ".join(padded).rstrip() + "\n")
